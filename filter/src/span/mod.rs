//! Stage 5, the span: the record a request fills, and the modules that fill it.
//!
//! - [`record`]: [`SpanRecord`], a pooled, arena-backed span that allocates nothing once warm;
//! - [`capture`]: which request data may leave the proxy (header allowlists, redaction, caps);
//! - [`mesh`]: what the mesh did (cluster, subset, release, faults, flags, peer identity).

pub mod capture;
pub mod mesh;
pub mod record;

pub use record::{
    Attribute, Attributes, Event, EventAttrs, Key, Link, SpanKind, SpanRecord, StatusCode, Value,
};
