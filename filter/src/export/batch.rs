//! The bounded queue of encoded spans waiting for export, and how it is cut into batches.
//!
//! Spans are stored already encoded, back to back in one buffer, so a batch is one copy into the
//! request body. The bound is in spans and in bytes; on overflow the newest span is dropped and
//! counted, never blocking a request.

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
    buf: Vec<u8>,
    lens: VecDeque<u32>,
    max_spans: usize,
    max_bytes: usize,
    max_batch: usize,
}

impl SpanQueue {
    /// An empty queue holding at most `max_spans` spans and `max_bytes` encoded bytes, cut into
    /// batches of at most `max_batch` spans.
    pub fn new(max_spans: u32, max_bytes: u64, max_batch: u32) -> Self {
        Self {
            buf: Vec::new(),
            lens: VecDeque::new(),
            max_spans: max_spans as usize,
            max_bytes: max_bytes.min(usize::MAX as u64) as usize,
            max_batch: max_batch as usize,
        }
    }

    /// Encodes `span` onto the tail of the queue, or says why it was dropped.
    pub fn push(&mut self, span: &SpanRecord) -> Result<(), DropReason> {
        if self.lens.len() >= self.max_spans {
            return Err(DropReason::QueueFull);
        }
        let start = self.buf.len();
        encode_span(span, &mut self.buf);
        let len = self.buf.len() - start;
        if self.buf.len() > self.max_bytes {
            self.buf.truncate(start);
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
        out.reserve(4 + 4 * n + self.buf.len());
        out.extend_from_slice(&(n as u32).to_le_bytes());
        for len in self.lens.drain(..) {
            out.extend_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(&self.buf);
        self.buf.clear();
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
        self.buf.len()
    }

    /// A full batch is waiting: export now rather than at the next interval.
    pub fn batch_ready(&self) -> bool {
        self.lens.len() >= self.max_batch
    }

    /// Moves up to `max_batch` spans from the head into an `ExportTraceServiceRequest` in
    /// `out`. Returns how many spans it holds.
    pub fn take_batch(&mut self, header: &BatchHeader, out: &mut Vec<u8>) -> usize {
        let n = self.lens.len().min(self.max_batch);
        let bytes: usize = self.lens.drain(..n).map(|l| l as usize).sum();
        header.encode_request(&self.buf[..bytes], out);
        self.buf.drain(..bytes);
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
        let mut q = SpanQueue::new(3, 1 << 20, 2);
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
        assert_eq!(q.take_batch(&header, &mut out), 1);
        assert!(q.is_empty() && q.bytes() == 0);
    }

    #[test]
    fn chunks_round_trip_and_reject_garbage() {
        let mut q = SpanQueue::new(10, 1 << 20, 10);
        q.push(&span(1)).unwrap();
        q.push(&span(2)).unwrap();
        let mut chunk = Vec::new();
        assert_eq!(q.take_chunk(&mut chunk), 2);
        assert!(q.is_empty() && q.bytes() == 0);
        let spans: Vec<&[u8]> = chunk_spans(&chunk).unwrap().collect();
        let mut one = Vec::new();
        encode_span(&span(1), &mut one);
        assert_eq!(spans[0], &one[..]);
        let mut other = SpanQueue::new(1, 1 << 20, 10);
        assert_eq!(other.push_encoded(spans[0]), Ok(()));
        assert_eq!(other.push_encoded(spans[1]), Err(DropReason::QueueFull));
        assert!(chunk_spans(&chunk[..chunk.len() - 1]).is_none());
        assert!(chunk_spans(&[]).is_none());
        assert!(chunk_spans(&[255, 255, 255, 255]).is_none());
        let mut empty = Vec::new();
        assert_eq!(SpanQueue::new(1, 1, 1).take_chunk(&mut empty), 0);
        assert_eq!(chunk_spans(&empty).unwrap().count(), 0);
    }

    #[test]
    fn byte_bound() {
        let mut one = Vec::new();
        encode_span(&span(1), &mut one);
        let mut q = SpanQueue::new(100, (one.len() * 3 / 2) as u64, 10);
        q.push(&span(1)).unwrap();
        assert_eq!(q.push(&span(2)), Err(DropReason::QueueFull));
        let mut tiny = SpanQueue::new(100, 10, 10);
        assert_eq!(tiny.push(&span(1)), Err(DropReason::TooLarge));
        assert!(tiny.is_empty());
    }
}
