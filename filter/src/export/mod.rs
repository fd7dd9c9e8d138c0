//! Stages 6 to 9, from a finished span to the collector and back: encode, batch, export, reply.
//!
//! - [`otlp`]: a finished span encoded once as OTLP protobuf, and the per-VM batch header;
//! - [`batch`]: the bounded queue of encoded spans, in pages that become request bodies;
//! - [`span_processor`]: the [`BatchSpanProcessor`](span_processor::BatchSpanProcessor): when to
//!   send a batch, when to retry, what to count; the adapter's transport is the exporter that
//!   sends what it returns;
//! - [`reply`]: what a collector's reply means (OTLP's retry and partial-success rules);
//! - [`rejection`]: why a collector refused a request, for the log line;
//! - [`gzip`]: export body compression;
//! - [`config`]: the `collector`, `batch` and `exporter` sections.

pub mod batch;
pub mod config;
pub mod gzip;
pub mod otlp;
pub mod rejection;
pub mod reply;
pub mod span_processor;
