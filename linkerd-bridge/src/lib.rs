//! linkerd-bridge: a native sidecar between the Linkerd proxy and the application that turns
//! inbound traffic into the same spans the meshtrace filter creates inside Envoy.
//!
//! Only [`adapter`] talks to the meshtrace tracer; everything else is transport (hyper),
//! Kubernetes facts and process plumbing, so core changes land in one place.

pub mod adapter;
pub mod admin;
pub mod body;
pub mod cli;
pub mod config;
pub mod export;
pub mod lambda;
pub mod linkerd;
pub mod proxy;
pub mod relay;
pub mod resource;
pub mod server;
pub mod shared;
pub mod upstream;

pub use cli::Args;
pub use server::{Bridge, Running};
