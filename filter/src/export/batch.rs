//! The bounded queue of encoded spans waiting for export, and how it is cut into batches.
//!
//! Spans are stored already encoded, back to back in one buffer, so a batch is one copy into the
//! request body. The bound is in spans and in bytes; on overflow the newest span is dropped and
//! counted, never blocking a request.
//!
//! A batch is bounded twice: at most `max_batch` spans and at most `max_export_bytes` encoded
//! span bytes (a single larger span goes alone). The byte bound is what keeps each export's work
//! on the worker thread small: building, copying and sending one request of about a megabyte in
//! one callback stalls every request queued behind it, where several requests of a few dozen
//! KiB spread the same work over separate callbacks.
//!
//! Taken batches advance a head offset instead of shifting the rest of the buffer down, so a
//! backlog cut into many small batches costs one copy per byte, not one move of the backlog per
//! batch; the buffer is compacted once the taken part outgrows the live part.

use std::collections::VecDeque;

use crate::export::otlp::{encode_span, BatchHeader};
use crate::span::SpanRecord;

/// Why a span did not make it into the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The queue held `max_queue` spans or `max_queue_bytes` bytes.
    QueueFull,
    /// One span alone is larger than the byte bound.
    TooLarge,
}

/// Encoded spans waiting for export.
#[derive(Debug)]
pub struct SpanQueue {
    /// `buf[head..]` holds the queued spans; `buf[..head]` was taken already.
    buf: Vec<u8>,
    head: usize,
    lens: VecDeque<u32>,
    max_spans: usize,
    max_bytes: usize,
    max_batch: usize,
    max_export_bytes: usize,
}

impl SpanQueue {
    /// An empty queue holding at most `max_spans` spans and `max_bytes` encoded bytes, cut into
    /// batches of at most `max_batch` spans and `max_export_bytes` encoded span bytes.
    pub fn new(max_spans: u32, max_bytes: u64, max_batch: u32, max_export_bytes: u64) -> Self {
        Self {
            buf: Vec::new(),
            head: 0,
            lens: VecDeque::new(),
            max_spans: max_spans as usize,
            max_bytes: max_bytes.min(usize::MAX as u64) as usize,
            max_batch: max_batch as usize,
            max_export_bytes: max_export_bytes.min(usize::MAX as u64) as usize,
        }
    }

    /// Moves the live spans to the front of the buffer, dropping the taken ones.
    fn compact(&mut self) {
        self.buf.drain(..self.head);
        self.head = 0;
    }

    /// Encodes `span` onto the tail of the queue, or says why it was dropped.
    pub fn push(&mut self, span: &SpanRecord) -> Result<(), DropReason> {
        if self.lens.len() >= self.max_spans {
            return Err(DropReason::QueueFull);
        }
        let start = self.buf.len();
        encode_span(span, &mut self.buf);
        let len = self.buf.len() - start;
        if self.buf.len() > self.max_bytes && self.head > 0 {
            // The bound is on the buffer itself: reclaim the taken part before refusing. Only a
            // queue near its byte bound gets here (with the default bounds the span bound comes
            // first), so this move is rare.
            self.compact();
        }
        if self.buf.len() > self.max_bytes {
            self.buf.truncate(self.buf.len() - len);
            return Err(if len > self.max_bytes {
                DropReason::TooLarge
            } else {
                DropReason::QueueFull
            });
        }
        self.lens.push_back(len as u32);
        Ok(())
    }

    /// Appends one span encoded elsewhere (another worker's, via the shared queue).
    pub fn push_encoded(&mut self, span: &[u8]) -> Result<(), DropReason> {
        if span.len() > self.max_bytes || span.len() > u32::MAX as usize {
            return Err(DropReason::TooLarge);
        }
        if self.buf.len() + span.len() > self.max_bytes && self.head > 0 {
            self.compact();
        }
        if self.lens.len() >= self.max_spans || self.buf.len() + span.len() > self.max_bytes {
            return Err(DropReason::QueueFull);
        }
        self.buf.extend_from_slice(span);
        self.lens.push_back(span.len() as u32);
        Ok(())
    }

    /// Moves every queued span into a hand-off chunk in `out` (replacing its contents):
    /// `u32 count`, `count` little-endian `u32` lengths, then the spans back to back. Returns
    /// the span count.
    pub fn take_chunk(&mut self, out: &mut Vec<u8>) -> usize {
        out.clear();
        let n = self.lens.len();
        out.reserve(4 + 4 * n + self.bytes());
        out.extend_from_slice(&(n as u32).to_le_bytes());
        for len in self.lens.drain(..) {
            out.extend_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(&self.buf[self.head..]);
        self.buf.clear();
        self.head = 0;
        n
    }

    /// Spans queued.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether no span is queued.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Encoded bytes queued.
    pub fn bytes(&self) -> usize {
        self.buf.len() - self.head
    }

    /// A full batch is waiting, by spans or by bytes: export now rather than at the next
    /// interval.
    pub fn batch_ready(&self) -> bool {
        self.lens.len() >= self.max_batch || self.bytes() >= self.max_export_bytes
    }

    /// Moves the next batch from the head (up to `max_batch` spans and `max_export_bytes`
    /// span bytes, at least one span) into an `ExportTraceServiceRequest` appended to `out`.
    /// Returns how many spans it holds.
    pub fn take_batch(&mut self, header: &BatchHeader, out: &mut Vec<u8>) -> usize {
        let mut n = 0;
        let mut bytes = 0;
        for &len in self.lens.iter().take(self.max_batch) {
            let len = len as usize;
            if n > 0 && bytes + len > self.max_export_bytes {
                break;
            }
            n += 1;
            bytes += len;
        }
        self.lens.drain(..n);
        header.append_request(&self.buf[self.head..self.head + bytes], out);
        self.head += bytes;
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        } else if self.head >= self.buf.len() - self.head {
            // The live part is at most as large as what was taken since the last move: moving
            // it costs no more than the copies already made.
            self.compact();
        }
        n
    }
}

/// The spans of a [`SpanQueue::take_chunk`] chunk; `None` when it is malformed (truncated,
/// lengths that do not add up), so a corrupt chunk is rejected whole.
pub fn chunk_spans(chunk: &[u8]) -> Option<impl Iterator<Item = &[u8]>> {
    let n = u32::from_le_bytes(chunk.get(..4)?.try_into().ok()?) as usize;
    let lens = chunk.get(4..4usize.checked_add(n.checked_mul(4)?)?)?;
    let mut body = &chunk[4 + lens.len()..];
    let total: u64 = lens
        .chunks_exact(4)
        .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as u64)
        .sum();
    if total != body.len() as u64 {
        return None;
    }
    Some(lens.chunks_exact(4).map(move |l| {
        let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
        let (span, rest) = body.split_at(len);
        body = rest;
        span
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{SpanId, TraceId};

    fn span(i: u8) -> SpanRecord {
        let mut s = SpanRecord::default();
        s.trace_id = TraceId([i; 16]);
        s.span_id = SpanId([i; 8]);
        s.set_name(&[b"GET /"]);
        s
    }

    #[test]
    fn bounded_and_batched() {
        let mut q = SpanQueue::new(3, 1 << 20, 2, 1 << 20);
        for i in 1..=3 {
            q.push(&span(i)).unwrap();
        }
        assert_eq!(q.push(&span(4)), Err(DropReason::QueueFull));
        assert!(q.batch_ready());
        let header = BatchHeader::new(&[]);
        let mut out = Vec::new();
        assert_eq!(q.take_batch(&header, &mut out), 2);
        use prost::Message;
        let req =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                &out[..],
            )
            .unwrap();
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(
            spans.iter().map(|s| s.span_id[0]).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(q.len(), 1);
        out.clear();
        assert_eq!(q.take_batch(&header, &mut out), 1);
        assert!(q.is_empty() && q.bytes() == 0);
    }

    #[test]
    fn chunks_round_trip_and_reject_garbage() {
        let mut q = SpanQueue::new(10, 1 << 20, 10, 1 << 20);
        q.push(&span(1)).unwrap();
        q.push(&span(2)).unwrap();
        let mut chunk = Vec::new();
        assert_eq!(q.take_chunk(&mut chunk), 2);
        assert!(q.is_empty() && q.bytes() == 0);
        let spans: Vec<&[u8]> = chunk_spans(&chunk).unwrap().collect();
        let mut one = Vec::new();
        encode_span(&span(1), &mut one);
        assert_eq!(spans[0], &one[..]);
        let mut other = SpanQueue::new(1, 1 << 20, 10, 1 << 20);
        assert_eq!(other.push_encoded(spans[0]), Ok(()));
        assert_eq!(other.push_encoded(spans[1]), Err(DropReason::QueueFull));
        assert!(chunk_spans(&chunk[..chunk.len() - 1]).is_none());
        assert!(chunk_spans(&[]).is_none());
        assert!(chunk_spans(&[255, 255, 255, 255]).is_none());
        let mut empty = Vec::new();
        assert_eq!(SpanQueue::new(1, 1, 1, 1).take_chunk(&mut empty), 0);
        assert_eq!(chunk_spans(&empty).unwrap().count(), 0);
    }

    #[test]
    fn byte_bound() {
        let mut one = Vec::new();
        encode_span(&span(1), &mut one);
        let mut q = SpanQueue::new(100, (one.len() * 3 / 2) as u64, 10, 1 << 20);
        q.push(&span(1)).unwrap();
        assert_eq!(q.push(&span(2)), Err(DropReason::QueueFull));
        let mut tiny = SpanQueue::new(100, 10, 10, 1 << 20);
        assert_eq!(tiny.push(&span(1)), Err(DropReason::TooLarge));
        assert!(tiny.is_empty());
    }

    /// Span `i` of the byte-bound tests: every one encodes to the same length.
    fn sized(i: u8) -> SpanRecord {
        let mut s = span(i);
        s.set_name(&[&[b'n'; 100]]);
        s
    }

    fn encoded(spans: impl IntoIterator<Item = u8>) -> Vec<u8> {
        let mut buf = Vec::new();
        for i in spans {
            encode_span(&sized(i), &mut buf);
        }
        buf
    }

    #[test]
    fn batches_are_bounded_by_bytes_and_a_large_span_goes_alone() {
        let len = encoded([1]).len();
        // Room for three spans and a half per request; ten spans per batch by count.
        let mut q = SpanQueue::new(100, 1 << 20, 10, (len * 7 / 2) as u64);
        let header = BatchHeader::new(&[]);
        for i in 1..=3 {
            q.push(&sized(i)).unwrap();
        }
        assert!(!q.batch_ready(), "three spans are under the byte bound");
        q.push(&sized(4)).unwrap();
        assert!(q.batch_ready(), "four spans are over it");
        for i in 5..=8 {
            q.push(&sized(i)).unwrap();
        }
        // Requests are exactly the spans they say, appended to what the body held.
        let mut out = b"prefix".to_vec();
        assert_eq!(q.take_batch(&header, &mut out), 3);
        let mut want = b"prefix".to_vec();
        header.append_request(&encoded(1..=3), &mut want);
        assert_eq!(out, want);
        assert_eq!((q.len(), q.bytes()), (5, 5 * len));
        for (n, first) in [(3, 4), (2, 7)] {
            out.clear();
            assert_eq!(q.take_batch(&header, &mut out), n);
            let mut want = Vec::new();
            header.encode_request(&encoded(first..first + n as u8), &mut want);
            assert_eq!(out, want);
        }
        assert!(q.is_empty() && q.bytes() == 0);
        // A span larger than the bound is not stuck: it goes alone.
        let mut small = SpanQueue::new(100, 1 << 20, 10, 1024);
        let mut huge = span(9);
        huge.set_name(&[&[b'h'; 2000]]);
        small.push(&huge).unwrap();
        small.push(&sized(1)).unwrap();
        assert!(small.batch_ready());
        out.clear();
        assert_eq!(small.take_batch(&header, &mut out), 1);
        out.clear();
        assert_eq!(small.take_batch(&header, &mut out), 1);
        assert!(small.is_empty());
    }

    #[test]
    fn taken_spans_are_reclaimed_before_the_byte_bound_refuses() {
        let len = encoded([1]).len();
        // The buffer holds four spans; requests take one.
        let mut q = SpanQueue::new(100, (4 * len) as u64, 10, len as u64);
        let header = BatchHeader::new(&[]);
        for i in 1..=4 {
            q.push(&sized(i)).unwrap();
        }
        assert_eq!(q.push(&sized(5)), Err(DropReason::QueueFull));
        let mut out = Vec::new();
        assert_eq!(q.take_batch(&header, &mut out), 1);
        // One span's room is free again, though the taken bytes were not moved yet.
        q.push(&sized(5)).unwrap();
        assert_eq!(q.push(&sized(6)), Err(DropReason::QueueFull));
        assert_eq!((q.len(), q.bytes()), (4, 4 * len));
        let mut spans = Vec::new();
        while !q.is_empty() {
            out.clear();
            assert_eq!(q.take_batch(&header, &mut out), 1);
            let mut want = Vec::new();
            header.encode_request(&encoded([2 + spans.len() as u8]), &mut want);
            assert_eq!(out, want, "in order after the move");
            spans.push(out.len());
        }
        assert_eq!(spans.len(), 4);
        // A hand-off chunk takes what is live, whatever was taken before.
        q.push(&sized(7)).unwrap();
        q.push(&sized(8)).unwrap();
        out.clear();
        assert_eq!(q.take_batch(&header, &mut out), 1);
        let mut chunk = Vec::new();
        assert_eq!(q.take_chunk(&mut chunk), 1);
        assert_eq!(
            chunk_spans(&chunk).unwrap().collect::<Vec<_>>(),
            [&encoded([8])[..]]
        );
        assert!(q.is_empty() && q.bytes() == 0);
    }
}
