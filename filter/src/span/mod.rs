//! Stage 5, the span: the record a request fills, and the modules that fill it.
//!
//! - [`record`]: [`SpanRecord`], a pooled, arena-backed span that allocates nothing once warm;
//! - [`capture`]: which request data may leave the proxy (header allowlists, redaction, caps);
//! - [`http`]: the HTTP semantic-convention attributes and the status rules;
//! - [`grpc`]: gRPC calls seen as HTTP: `rpc.*` attributes, the method as the name, the status;
//! - [`name`]: the span name and `http.route`, bounded in length and cardinality;
//! - [`mesh`]: what the mesh did (cluster, subset, release, faults, flags, peer identity);
//! - [`faas`]: functions in the mesh: `faas.*` on a function's spans, Knative revisions, and
//!   calls to AWS Lambda through Envoy's aws_lambda filter ([`faas::lambda`]), and
//!   `faas.invoked_*` on calls to serverless upstreams ([`faas::upstream`]).

pub mod capture;
pub mod faas;
pub mod grpc;
pub mod http;
pub mod mesh;
pub mod name;
pub mod record;

pub use record::{
    Attribute, Attributes, Event, EventAttrs, GuessedName, Key, Link, SpanKind, SpanRecord,
    StatusCode, Value,
};

/// What span building reads from the configuration, compiled once per VM so requests only look
/// things up.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    /// Canary and A/B rules, and subset weights (`traffic`).
    pub traffic: mesh::traffic::Traffic,
    /// Route templates for `http.route` (`routes`).
    pub routes: mesh::route::Routes,
    /// Header capture allowlists, redaction and `url.query` (`capture`).
    pub capture: capture::Capture,
    /// When to read the peer's mTLS identity (`identity`).
    pub identity: mesh::identity::IdentityMode,
    /// Attribute size and count caps (`limits`).
    pub limits: capture::Limits,
    /// Baggage keys copied into `baggage.<key>` attributes (`baggage.attribute_keys`).
    pub baggage_keys: Vec<String>,
    /// Whether the workload is a function, and its trigger (`faas`, Knative pod labels).
    pub faas: faas::Faas,
    /// Lambda upstreams, the log tail opt-in and the price (`faas.lambda*`).
    pub lambda: faas::lambda::Lambda,
    /// Serverless upstreams this workload calls (`faas.upstreams`).
    pub faas_upstreams: faas::upstream::Upstreams,
}

/// What the host knows when the request is over.
#[derive(Clone, Copy, Debug)]
pub struct Finish<'a> {
    /// When the request ended, in ns since the Unix epoch.
    pub end_ns: u64,
    /// `response.code`; `None` or 0 when no response was sent.
    pub status_code: Option<i64>,
    /// `request.protocol`, e.g. `HTTP/1.1`.
    pub protocol: Option<&'a [u8]>,
    /// `source.address` (`ip:port` of the downstream peer).
    pub source_address: Option<&'a [u8]>,
    /// The span kind, known only now with `direction: auto`.
    pub kind: SpanKind,
    /// What the request carried (from [`http::record_request`]), borrowed from where the
    /// adapter kept it: the facts are a few hundred bytes, not worth a copy per request.
    pub request: &'a mesh::RequestFacts,
    /// What the mesh did (cluster, route, flags, identity).
    pub mesh: mesh::EndFacts<'a>,
    /// The `grpc-status` the response carried (trailers, else headers), parsed with
    /// [`grpc::Code::parse`]; read only for gRPC requests (`request.grpc`).
    pub grpc_status: Option<grpc::Code>,
    /// A request to a Lambda upstream: its index in [`faas::lambda::Lambda::lookup`] and what
    /// the response headers said.
    pub lambda: Option<(u8, faas::lambda::Invocation<'a>)>,
}

impl Default for Finish<'_> {
    fn default() -> Self {
        Self {
            end_ns: 0,
            status_code: None,
            protocol: None,
            source_address: None,
            kind: SpanKind::default(),
            request: &mesh::RequestFacts::NONE,
            mesh: mesh::EndFacts::default(),
            grpc_status: None,
            lambda: None,
        }
    }
}
