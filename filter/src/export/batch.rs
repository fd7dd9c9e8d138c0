//! The bounded queue of encoded spans waiting for export, cut into batches as they arrive.
//!
//! Spans are encoded straight into pages, and a page is one future request body: it keeps
//! room at its front for the largest framing (a gRPC frame's 5 bytes, then the
//! `ExportTraceServiceRequest`, `ResourceSpans` and `ScopeSpans` keys and lengths around the
//! VM's encoded resource and scope), then holds its batch's spans back to back. When the batch
//! is taken, the framing is written right-aligned just before the first span and the page's
//! buffer is handed to the request by swap: the spans are written once, by
//! [`encode_span`](crate::export::otlp::encode_span), and never copied again. The request's old
//! buffer comes back as a spare page, so a warm queue allocates nothing.
//!
//! The bound is in spans and in bytes; on overflow the newest span is dropped and counted,
//! never blocking a request.
//!
//! A batch is bounded twice: at most `max_batch` spans and at most `max_export_bytes` encoded
//! span bytes (a single larger span goes alone). The byte bound is what keeps each export's work
//! on the worker thread small: building and sending one request of about a megabyte in one
//! callback stalls every request queued behind it, where several requests of a few dozen KiB
//! spread the same work over separate callbacks. A span that would pass either bound starts a
//! new page, so the pages are the batches the bounds give, cut greedily from the oldest span.
//!
//! Memory: every page but the newest is a full batch, and a page's buffer is reserved for one
//! batch (`max_export_bytes` plus the framing), so the pages hold about the queue's bytes; a
//! handful of spare pages (the in-flight requests' old bodies) are kept for reuse and the rest
//! are freed, so buffers never grow to the whole queue's size.

use std::collections::VecDeque;

use crate::export::otlp::{encode_span_sized, span_field_len, span_len, BatchHeader};
use crate::span::SpanRecord;

/// A gRPC frame before the message: compressed flag and big-endian `u32` length.
pub const GRPC_FRAME: usize = 5;

/// Spare bytes past a full page's last span: the varint writers reserve a fixed 10 bytes
/// for a length however short it turns out, which must not make a full page reallocate.
const PAGE_SLACK: usize = 16;

/// The up-front reservation of a page's span bytes is capped here: a configuration with
/// batches of many MiB grows its pages as spans arrive instead of holding that much per page
/// while traffic is light.
const MAX_PAGE_RESERVE: usize = 1 << 20;

/// Why a span did not make it into the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The queue held `max_queue` spans or `max_queue_bytes` bytes.
    QueueFull,
    /// One span alone is larger than the byte bound.
    TooLarge,
}

/// One batch being filled or waiting: `buf[..room]` is free for the framing, `buf[room..]`
/// holds `spans` encoded spans. The open page's `buf` is empty until its first span.
#[derive(Debug, Default)]
struct Page {
    buf: Vec<u8>,
    spans: usize,
}

/// A batch taken from the queue by [`SpanQueue::take_batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Spans it holds.
    pub spans: usize,
    /// Where the request body starts in the buffer it was swapped into (its gRPC frame, when
    /// asked for, else the `ExportTraceServiceRequest`).
    pub start: usize,
    /// Bytes of the `ExportTraceServiceRequest`, without the gRPC frame.
    pub request_len: usize,
}

/// Encoded spans waiting for export.
#[derive(Debug)]
pub struct SpanQueue {
    /// Full batches, oldest first.
    pages: VecDeque<Page>,
    /// The batch being filled, after `pages`.
    open: Page,
    /// Emptied buffers kept for new pages, at most `max_spare`.
    spare: Vec<Vec<u8>>,
    max_spare: usize,
    /// Each queued span's encoded length, oldest first (for hand-off chunks).
    lens: VecDeque<u32>,
    /// Encoded span bytes queued.
    bytes: usize,
    header: BatchHeader,
    /// Bytes kept free before a page's first span: [`GRPC_FRAME`] and the largest prefix.
    room: usize,
    /// Capacity a new page is given.
    page_reserve: usize,
    /// `room + max_export_bytes`: a page's length at its byte bound.
    page_limit: usize,
    /// Spare buffers larger than this (a page that held one very large span) are freed.
    max_spare_capacity: usize,
    max_spans: usize,
    max_bytes: usize,
    max_batch: usize,
    max_export_bytes: usize,
}

impl SpanQueue {
    /// An empty queue holding at most `max_spans` spans and `max_bytes` encoded bytes, cut into
    /// batches of at most `max_batch` spans and `max_export_bytes` encoded span bytes, framed
    /// with `header`; up to `spare_pages` emptied buffers are kept for reuse (the exporter's
    /// in-flight requests plus one is enough for a steady flow to allocate nothing).
    pub fn new(
        max_spans: u32,
        max_bytes: u64,
        max_batch: u32,
        max_export_bytes: u64,
        header: BatchHeader,
        spare_pages: usize,
    ) -> Self {
        let max_bytes = max_bytes.min(usize::MAX as u64) as usize;
        let max_export_bytes = max_export_bytes.min(usize::MAX as u64) as usize;
        let room = GRPC_FRAME + header.max_prefix_len();
        // A page never holds more span bytes than a batch, nor than the queue, except one
        // span larger than a batch alone.
        let batch = max_export_bytes.min(max_bytes);
        let page_reserve = room + batch.min(MAX_PAGE_RESERVE) + PAGE_SLACK;
        Self {
            pages: VecDeque::new(),
            open: Page::default(),
            spare: Vec::with_capacity(spare_pages),
            max_spare: spare_pages,
            lens: VecDeque::new(),
            bytes: 0,
            header,
            room,
            page_reserve,
            page_limit: room.saturating_add(max_export_bytes),
            // Saturating: the bounds may be as large as the configuration's `u64` allows.
            max_spare_capacity: room
                .saturating_add(batch)
                .saturating_add(PAGE_SLACK)
                .saturating_mul(2),
            max_spans: max_spans as usize,
            max_bytes,
            max_batch: max_batch as usize,
            max_export_bytes,
        }
    }

    /// Refuses a span of `len` encoded bytes the byte bound has no room for.
    fn check_bytes(&self, len: usize) -> Result<(), DropReason> {
        if len > self.max_bytes || len > u32::MAX as usize {
            Err(DropReason::TooLarge)
        } else if self.bytes + len > self.max_bytes {
            Err(DropReason::QueueFull)
        } else {
            Ok(())
        }
    }

    /// The page a span of `len` encoded bytes goes to: the open one, unless the span would
    /// pass its batch's bounds (a span alone may pass the byte bound).
    #[inline]
    fn page_for(&mut self, len: usize) -> &mut Page {
        let p = &self.open;
        // An open page without its room yet fails the last test.
        if p.spans >= self.max_batch
            || p.buf.len() + len > self.page_limit
            || p.buf.len() < self.room
        {
            self.turn_page();
        }
        &mut self.open
    }

    /// Seals the open page when it holds spans, and readies an empty one.
    #[cold]
    fn turn_page(&mut self) {
        if self.open.spans > 0 {
            let full = core::mem::take(&mut self.open);
            self.pages.push_back(full);
        }
        if self.open.buf.len() < self.room {
            let mut buf = self.spare.pop().unwrap_or_default();
            buf.clear();
            buf.reserve(self.page_reserve);
            buf.resize(self.room, 0);
            self.open.buf = buf;
        }
    }

    /// Counts a span of `len` bytes written onto the newest page.
    fn added(&mut self, len: usize) {
        self.bytes += len;
        self.lens.push_back(len as u32);
    }

    /// Keeps an emptied buffer for a new page when there is room among the spares and it is
    /// a page's size; frees it otherwise.
    fn recycle(&mut self, buf: Vec<u8>) {
        let cap = buf.capacity();
        if self.spare.len() < self.max_spare
            && cap >= self.page_reserve
            && cap <= self.max_spare_capacity
        {
            self.spare.push(buf);
        }
    }

    /// Encodes `span` onto the tail of the queue, or says why it was dropped.
    pub fn push(&mut self, span: &SpanRecord) -> Result<(), DropReason> {
        if self.lens.len() >= self.max_spans {
            return Err(DropReason::QueueFull);
        }
        let body = span_len(span);
        let len = span_field_len(body);
        self.check_bytes(len)?;
        let page = self.page_for(len);
        let before = page.buf.len();
        encode_span_sized(span, body, &mut page.buf);
        debug_assert_eq!(page.buf.len() - before, len);
        page.spans += 1;
        self.added(len);
        Ok(())
    }

    /// Appends one span encoded elsewhere (another worker's, via the shared queue).
    pub fn push_encoded(&mut self, span: &[u8]) -> Result<(), DropReason> {
        if span.len() > self.max_bytes || span.len() > u32::MAX as usize {
            return Err(DropReason::TooLarge);
        }
        if self.lens.len() >= self.max_spans {
            return Err(DropReason::QueueFull);
        }
        self.check_bytes(span.len())?;
        let page = self.page_for(span.len());
        page.buf.extend_from_slice(span);
        page.spans += 1;
        self.added(span.len());
        Ok(())
    }

    /// Moves every queued span into a hand-off chunk in `out` (replacing its contents):
    /// `u32 count`, `count` little-endian `u32` lengths, then the spans back to back. Returns
    /// the span count.
    pub fn take_chunk(&mut self, out: &mut Vec<u8>) -> usize {
        out.clear();
        let n = self.lens.len();
        out.reserve(4 + 4 * n + self.bytes);
        out.extend_from_slice(&(n as u32).to_le_bytes());
        for len in self.lens.drain(..) {
            out.extend_from_slice(&len.to_le_bytes());
        }
        while let Some(page) = self.pages.pop_front() {
            out.extend_from_slice(&page.buf[self.room..]);
            self.recycle(page.buf);
        }
        if self.open.spans > 0 {
            out.extend_from_slice(&self.open.buf[self.room..]);
            self.open.buf.truncate(self.room);
            self.open.spans = 0;
        }
        self.bytes = 0;
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
        self.bytes
    }

    /// A full batch is waiting, by spans or by bytes: export now rather than at the next
    /// interval.
    pub fn batch_ready(&self) -> bool {
        let p = &self.open;
        !self.pages.is_empty()
            || (p.spans > 0
                && (p.spans >= self.max_batch || p.buf.len() - self.room >= self.max_export_bytes))
    }

    /// Takes the next batch (the oldest page: up to `max_batch` spans and `max_export_bytes`
    /// span bytes, at least one span) as a request body, framed in place and swapped into
    /// `out`: `out[start..]` is the body, a gRPC frame (uncompressed flag, length) first when
    /// `grpc_frame`, then the `ExportTraceServiceRequest`; what `out` held before is kept as a
    /// spare page or freed. `None` when the queue is empty (`out` untouched).
    pub fn take_batch(&mut self, grpc_frame: bool, out: &mut Vec<u8>) -> Option<Batch> {
        let mut page = match self.pages.pop_front() {
            Some(page) => page,
            None if self.open.spans > 0 => core::mem::take(&mut self.open),
            None => return None,
        };
        let bytes = page.buf.len() - self.room;
        let prefix = self.header.prefix_len(bytes);
        let request = self.room - prefix;
        self.header
            .put_prefix(bytes, &mut page.buf[request..self.room]);
        let request_len = prefix + bytes;
        let start = if grpc_frame {
            // `room` holds the largest prefix and the frame: `request >= GRPC_FRAME`.
            let start = request - GRPC_FRAME;
            page.buf[start] = 0;
            page.buf[start + 1..request].copy_from_slice(&(request_len as u32).to_be_bytes());
            start
        } else {
            request
        };
        self.lens.drain(..page.spans);
        self.bytes -= bytes;
        core::mem::swap(out, &mut page.buf);
        self.recycle(page.buf);
        Some(Batch {
            spans: page.spans,
            start,
            request_len,
        })
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
    use crate::export::otlp::{encode_span, ResourceValue};
    use crate::ids::{SpanId, TraceId};

    fn span(i: u8) -> SpanRecord {
        let mut s = SpanRecord::default();
        s.trace_id = TraceId([i; 16]);
        s.span_id = SpanId([i; 8]);
        s.set_name(&[b"GET /"]);
        s
    }

    fn header() -> BatchHeader {
        BatchHeader::new(&[("service.name", ResourceValue::Str("checkout".into()))])
    }

    fn queue(max_spans: u32, max_bytes: u64, max_batch: u32, max_export_bytes: u64) -> SpanQueue {
        SpanQueue::new(
            max_spans,
            max_bytes,
            max_batch,
            max_export_bytes,
            header(),
            2,
        )
    }

    /// The next batch's request (no gRPC frame), as an owned body.
    fn take(q: &mut SpanQueue) -> (usize, Vec<u8>) {
        let mut out = Vec::new();
        let b = q.take_batch(false, &mut out).unwrap();
        assert_eq!(b.request_len, out.len() - b.start);
        (b.spans, out[b.start..].to_vec())
    }

    /// A request the way it was built before pages: the spans copied after the framing.
    fn request(spans: &[u8]) -> Vec<u8> {
        let mut want = Vec::new();
        header().encode_request(spans, &mut want);
        want
    }

    #[test]
    fn bounded_and_batched() {
        let mut q = queue(3, 1 << 20, 2, 1 << 20);
        for i in 1..=3 {
            q.push(&span(i)).unwrap();
        }
        assert_eq!(q.push(&span(4)), Err(DropReason::QueueFull));
        assert!(q.batch_ready());
        let (n, out) = take(&mut q);
        assert_eq!(n, 2);
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
        assert!(!q.batch_ready());
        assert_eq!(take(&mut q).0, 1);
        assert!(q.is_empty() && q.bytes() == 0);
        let mut out = b"untouched".to_vec();
        assert_eq!(q.take_batch(true, &mut out), None);
        assert_eq!(out, b"untouched");
    }

    #[test]
    fn chunks_round_trip_and_reject_garbage() {
        let mut q = queue(10, 1 << 20, 10, 1 << 20);
        q.push(&span(1)).unwrap();
        q.push(&span(2)).unwrap();
        let mut chunk = Vec::new();
        assert_eq!(q.take_chunk(&mut chunk), 2);
        assert!(q.is_empty() && q.bytes() == 0);
        let spans: Vec<&[u8]> = chunk_spans(&chunk).unwrap().collect();
        let mut one = Vec::new();
        encode_span(&span(1), &mut one);
        assert_eq!(spans[0], &one[..]);
        let mut other = queue(1, 1 << 20, 10, 1 << 20);
        assert_eq!(other.push_encoded(spans[0]), Ok(()));
        assert_eq!(other.push_encoded(spans[1]), Err(DropReason::QueueFull));
        assert!(chunk_spans(&chunk[..chunk.len() - 1]).is_none());
        assert!(chunk_spans(&[]).is_none());
        assert!(chunk_spans(&[255, 255, 255, 255]).is_none());
        let mut empty = Vec::new();
        assert_eq!(queue(1, 1, 1, 1).take_chunk(&mut empty), 0);
        assert_eq!(chunk_spans(&empty).unwrap().count(), 0);
    }

    #[test]
    fn byte_bound() {
        let mut one = Vec::new();
        encode_span(&span(1), &mut one);
        let mut q = queue(100, (one.len() * 3 / 2) as u64, 10, 1 << 20);
        q.push(&span(1)).unwrap();
        assert_eq!(q.push(&span(2)), Err(DropReason::QueueFull));
        assert_eq!(q.push_encoded(&one), Err(DropReason::QueueFull));
        let mut tiny = queue(100, 10, 10, 1 << 20);
        assert_eq!(tiny.push(&span(1)), Err(DropReason::TooLarge));
        assert_eq!(tiny.push_encoded(&one), Err(DropReason::TooLarge));
        assert!(tiny.is_empty() && tiny.bytes() == 0);
        // The span bound comes first, even for a span too large for the byte bound.
        let mut full = queue(1, (one.len() * 3 / 2) as u64, 10, 1 << 20);
        full.push(&span(1)).unwrap();
        let mut huge = span(2);
        huge.set_name(&[&[b'h'; 2000]]);
        assert_eq!(full.push(&huge), Err(DropReason::QueueFull));
        // Bounds as large as the configuration allows: pages stay a modest reservation.
        let mut vast = queue(10, u64::MAX, 10, u64::MAX);
        vast.push(&span(1)).unwrap();
        assert!(vast.open.buf.capacity() <= vast.room + MAX_PAGE_RESERVE + PAGE_SLACK);
        assert_eq!(take(&mut vast), (1, request(&one)));
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
        let mut q = queue(100, 1 << 20, 10, (len * 7 / 2) as u64);
        for i in 1..=3 {
            q.push(&sized(i)).unwrap();
        }
        assert!(!q.batch_ready(), "three spans are under the byte bound");
        q.push(&sized(4)).unwrap();
        assert!(q.batch_ready(), "four spans are over it");
        for i in 5..=8 {
            q.push(&sized(i)).unwrap();
        }
        // Requests are exactly the spans they say.
        assert_eq!(take(&mut q), (3, request(&encoded(1..=3))));
        assert_eq!((q.len(), q.bytes()), (5, 5 * len));
        for (n, first) in [(3, 4), (2, 7)] {
            assert_eq!(take(&mut q), (n, request(&encoded(first..first + n as u8))));
        }
        assert!(q.is_empty() && q.bytes() == 0);
        // A span larger than the bound is not stuck: it goes alone.
        let mut small = queue(100, 1 << 20, 10, 1024);
        let mut huge = span(9);
        huge.set_name(&[&[b'h'; 2000]]);
        small.push(&huge).unwrap();
        small.push(&sized(1)).unwrap();
        assert!(small.batch_ready());
        let mut alone = Vec::new();
        encode_span(&huge, &mut alone);
        assert_eq!(take(&mut small), (1, request(&alone)));
        assert_eq!(take(&mut small), (1, request(&encoded([1]))));
        assert!(small.is_empty());
    }

    #[test]
    fn taken_spans_free_their_room_in_the_byte_bound() {
        let len = encoded([1]).len();
        // The queue holds four spans; requests take one.
        let mut q = queue(100, (4 * len) as u64, 10, len as u64);
        for i in 1..=4 {
            q.push(&sized(i)).unwrap();
        }
        assert_eq!(q.push(&sized(5)), Err(DropReason::QueueFull));
        assert_eq!(take(&mut q).0, 1);
        // One span's room is free again.
        q.push(&sized(5)).unwrap();
        assert_eq!(q.push(&sized(6)), Err(DropReason::QueueFull));
        assert_eq!((q.len(), q.bytes()), (4, 4 * len));
        let mut next = 2;
        while !q.is_empty() {
            assert_eq!(take(&mut q), (1, request(&encoded([next]))), "in order");
            next += 1;
        }
        assert_eq!(next, 6);
        // A hand-off chunk takes what is live, whatever was taken before.
        q.push(&sized(7)).unwrap();
        q.push(&sized(8)).unwrap();
        assert_eq!(take(&mut q).0, 1);
        let mut chunk = Vec::new();
        assert_eq!(q.take_chunk(&mut chunk), 1);
        assert_eq!(
            chunk_spans(&chunk).unwrap().collect::<Vec<_>>(),
            [&encoded([8])[..]]
        );
        assert!(q.is_empty() && q.bytes() == 0);
    }

    #[test]
    fn grpc_frames_are_written_in_place() {
        let mut q = queue(100, 1 << 20, 2, 1 << 20);
        for i in 1..=3 {
            q.push(&sized(i)).unwrap();
        }
        let mut out = vec![9; 7];
        let b = q.take_batch(true, &mut out).unwrap();
        let want = request(&encoded(1..=2));
        assert_eq!(b.spans, 2);
        assert_eq!(b.request_len, want.len());
        let mut framed = vec![0];
        framed.extend_from_slice(&(want.len() as u32).to_be_bytes());
        framed.extend_from_slice(&want);
        assert_eq!(&out[b.start..], &framed[..]);
    }

    #[test]
    fn pages_are_reused_and_stay_the_size_of_a_batch() {
        let len = encoded([1]).len();
        let batch = 3 * len;
        let mut q = queue(1000, 1 << 20, 100, batch as u64);
        // A backlog of many batches: each page holds one, none grows to the queue's size.
        for i in 0..90 {
            q.push(&sized(i)).unwrap();
        }
        assert_eq!(q.pages.len(), 29);
        let largest = q
            .pages
            .iter()
            .chain([&q.open])
            .map(|p| p.buf.capacity())
            .max()
            .unwrap();
        assert_eq!(largest, q.page_reserve);
        assert!(q.page_reserve <= q.room + batch + PAGE_SLACK);
        // Taking them keeps two spare buffers (the bound given) and frees the rest.
        let mut bodies = [Vec::new(), Vec::new()];
        for k in 0..30 {
            q.take_batch(false, &mut bodies[k % 2]).unwrap();
        }
        assert_eq!(q.spare.len(), 2);
        assert!(bodies.iter().all(|b| b.capacity() == q.page_reserve));
        // Warm: a steady flow takes its pages from the spares and returns the bodies to them.
        for k in 0..20 {
            for _ in 0..3 {
                q.push(&sized(1)).unwrap();
            }
            let spare = q.spare.len();
            q.take_batch(false, &mut bodies[k % 2]).unwrap();
            assert_eq!(q.spare.len(), spare + 1);
            assert!(q.spare.len() <= 2);
        }
        // A page that held one span far larger than a batch is freed, not kept.
        let mut huge = span(9);
        huge.set_name(&[&[b'h'; 5000]]);
        q.push(&huge).unwrap();
        let mut body = Vec::new();
        q.take_batch(false, &mut body).unwrap();
        assert!(body.capacity() > q.max_spare_capacity);
        q.push(&sized(1)).unwrap();
        let spare = q.spare.len();
        q.take_batch(false, &mut body).unwrap();
        assert_eq!(q.spare.len(), spare, "the large buffer was freed");
    }

    /// The batches of a queue of spans with these lengths, cut the way they were before
    /// pages: from the oldest span, up to `max_batch` spans and `max_export` bytes, at least
    /// one span.
    fn model_cut(lens: &[usize], max_batch: usize, max_export: usize) -> Vec<usize> {
        let mut cuts = Vec::new();
        let mut rest = lens;
        while !rest.is_empty() {
            let (mut n, mut bytes) = (0, 0);
            for &len in rest.iter().take(max_batch) {
                if n > 0 && bytes + len > max_export {
                    break;
                }
                n += 1;
                bytes += len;
            }
            cuts.push(n);
            rest = &rest[n..];
        }
        cuts
    }

    proptest::proptest! {
        #[test]
        fn requests_are_the_spans_framed_as_before_pages(
            names in proptest::collection::vec(0usize..400, 1..60),
            max_batch in 1u32..12,
            max_export in 100u64..1500,
            grpc: bool,
            chunk_at in proptest::option::of(0usize..60),
        ) {
            // Spans of varied sizes (some alone larger than a batch), cut by count and by
            // bytes; every request must be byte for byte what the old copy built, gRPC frame
            // included, and the cuts those of the old rule.
            let spans: Vec<SpanRecord> = names
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let mut s = span(i as u8);
                    s.set_name(&[&vec![b'n'; n]]);
                    s
                })
                .collect();
            let fields = crate::export::otlp::encode_each(&spans);
            let mut q = queue(1000, 1 << 20, max_batch, max_export);
            let mut live = 0;
            for (i, (s, f)) in spans.iter().zip(&fields).enumerate() {
                if Some(i) == chunk_at {
                    // A hand-off chunk takes everything; cutting starts again after it.
                    let mut chunk = Vec::new();
                    q.take_chunk(&mut chunk);
                    let got: Vec<&[u8]> = chunk_spans(&chunk).unwrap().collect();
                    let want: Vec<&[u8]> = fields[live..i].iter().map(Vec::as_slice).collect();
                    proptest::prop_assert_eq!(got, want);
                    live = i;
                }
                // Half the spans arrive already encoded (a singleton's hand-off).
                if i % 2 == 0 {
                    q.push(s).unwrap();
                } else {
                    q.push_encoded(f).unwrap();
                }
            }
            let lens: Vec<usize> = fields[live..].iter().map(Vec::len).collect();
            let mut from = live;
            let mut body = Vec::new();
            for n in model_cut(&lens, max_batch as usize, max_export as usize) {
                let ready = q.len() >= max_batch as usize || q.bytes() >= max_export as usize;
                proptest::prop_assert_eq!(q.batch_ready(), ready);
                let b = q.take_batch(grpc, &mut body).unwrap();
                proptest::prop_assert_eq!(b.spans, n);
                let mut want = Vec::new();
                if grpc {
                    want.extend_from_slice(&[0, 0, 0, 0, 0]);
                }
                header().append_request(&fields[from..from + n].concat(), &mut want);
                if grpc {
                    let len = (want.len() - GRPC_FRAME) as u32;
                    want[1..GRPC_FRAME].copy_from_slice(&len.to_be_bytes());
                }
                proptest::prop_assert_eq!(&body[b.start..], &want[..]);
                proptest::prop_assert_eq!(b.request_len, want.len() - if grpc { GRPC_FRAME } else { 0 });
                from += n;
            }
            proptest::prop_assert!(q.is_empty() && q.bytes() == 0 && q.pages.is_empty());
            proptest::prop_assert_eq!(q.open.spans, 0);
        }
    }
}
