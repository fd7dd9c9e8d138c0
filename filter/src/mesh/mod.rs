//! What the mesh did to a request, as span attributes: which cluster, subset and release served
//! it, what route it took, which faults were injected, how it failed, and who the peer was.
//!
//! Each concept has its own module; every function here takes plain data the glue gathered
//! (properties, header slices) and writes into a [`crate::span::SpanRecord`].

pub mod cluster;
pub mod fault;
pub mod flags;
pub mod identity;
pub mod resource;
pub mod route;
pub mod traffic;

use crate::capture::Capture;
use crate::config::{Config, ConfigError};

/// Per-VM tables compiled from the configuration, so requests only look things up.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    pub traffic: traffic::Traffic,
    pub routes: route::Routes,
    pub capture: Capture,
    pub span_name: route::SpanNameStyle,
    pub identity: identity::IdentityMode,
}

impl Tables {
    pub fn compile(c: &Config) -> Result<Self, ConfigError> {
        Ok(Self {
            traffic: traffic::Traffic::compile(&c.traffic)?,
            routes: route::Routes::compile(&c.routes)?,
            capture: Capture::compile(&c.capture)?,
            span_name: c.span_name,
            identity: c.identity,
        })
    }
}
