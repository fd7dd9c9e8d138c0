//! A request scenario as a test writes it, and what came out of the filter.

use super::headers::HeaderMap;
use super::properties::{PropValue, PropertyTree};
use super::state::LocalResponse;

/// What the upstream answers (ignored when the filter replies locally).
#[derive(Clone, Debug, PartialEq)]
pub struct Resp {
    /// Response headers, `:status` included.
    pub headers: HeaderMap,
    /// The response body.
    pub body: Vec<u8>,
    /// Response trailers.
    pub trailers: HeaderMap,
}

impl Resp {
    /// A response with `:status` and nothing else.
    pub fn status(code: u16) -> Self {
        Self {
            headers: HeaderMap::from_pairs(&[(":status", code.to_string())]),
            body: Vec::new(),
            trailers: HeaderMap::new(),
        }
    }

    /// A response with exactly these headers (`:status` included by the caller).
    pub fn raw(headers: HeaderMap) -> Self {
        Self {
            headers,
            body: Vec::new(),
            trailers: HeaderMap::new(),
        }
    }

    /// Appends a response header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.add(name.as_bytes(), value.as_ref());
        self
    }

    /// Sets the response body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Appends a response trailer.
    pub fn trailer(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.trailers.add(name.as_bytes(), value.as_ref());
        self
    }
}

/// One HTTP exchange to run through the filter chain.
#[derive(Clone, Debug, PartialEq)]
pub struct Req {
    /// Request headers, pseudo-headers included.
    pub headers: HeaderMap,
    /// The request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: HeaderMap,
    /// Stream properties (stream info such as `response.code`, `xds.listener_direction`);
    /// these are readable in every phase of the stream.
    pub properties: PropertyTree,
    /// What the upstream answers.
    pub response: Resp,
    /// Virtual time between forwarding the request and the response headers arriving.
    pub latency_ms: u64,
    /// The worker VM that handles it.
    pub worker: usize,
}

impl Req {
    /// A request with the pseudo-headers an HTTP/1.1 codec would produce.
    pub fn new(method: &str, path: &str) -> Self {
        Self::raw(HeaderMap::from_pairs(&[
            (":method", method),
            (":path", path),
            (":authority", "backend.local"),
            (":scheme", "http"),
        ]))
    }

    /// A `GET` of `path` with the usual pseudo-headers.
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// A `POST` to `path` with the usual pseudo-headers.
    pub fn post(path: &str) -> Self {
        Self::new("POST", path)
    }

    /// Exactly these request headers, nothing added.
    pub fn raw(headers: HeaderMap) -> Self {
        Self {
            headers,
            body: Vec::new(),
            trailers: HeaderMap::new(),
            properties: PropertyTree::default(),
            response: Resp::status(200),
            latency_ms: 0,
            worker: 0,
        }
    }

    /// Appends a header (names are lower-cased, as Envoy's codecs do).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.add(name.as_bytes(), value.as_ref());
        self
    }

    /// Sets `:authority`.
    pub fn authority(mut self, authority: &str) -> Self {
        self.headers.replace(b":authority", authority.as_bytes());
        self
    }

    /// Sets the request body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Appends a request trailer.
    pub fn trailer(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.trailers.add(name.as_bytes(), value.as_ref());
        self
    }

    /// A stream property by dotted path, e.g. `.property("response.code", 200i64)`.
    pub fn property(mut self, path: &str, value: impl Into<PropValue>) -> Self {
        self.properties.set_dotted(path, value.into());
        self
    }

    /// A stream property by its segments, for keys that hold dots themselves, e.g.
    /// `.property_at(&["filter_state", "io.istio.peer_principal"], "spiffe://...")`.
    pub fn property_at(mut self, segments: &[&str], value: impl Into<PropValue>) -> Self {
        self.properties.set(segments, value.into());
        self
    }

    /// Sets what the upstream answers.
    pub fn response(mut self, response: Resp) -> Self {
        self.response = response;
        self
    }

    /// Sets the virtual time between forwarding the request and the response headers.
    pub fn latency_ms(mut self, ms: u64) -> Self {
        self.latency_ms = ms;
        self
    }

    /// Runs the exchange on worker VM `worker`.
    pub fn on_worker(mut self, worker: usize) -> Self {
        self.worker = worker;
        self
    }
}

/// What the upstream received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// Request headers as forwarded.
    pub headers: HeaderMap,
    /// The request body as forwarded.
    pub body: Vec<u8>,
    /// Request trailers as forwarded.
    pub trailers: HeaderMap,
}

/// What came out of one exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// The request as forwarded upstream (after the filters); `None` if it was not forwarded.
    pub upstream: Option<Upstream>,
    /// A local reply the filter sent instead.
    pub local_response: Option<LocalResponse>,
    /// Response headers the client received (after the filters).
    pub downstream_headers: HeaderMap,
    /// The callback that paused the stream without resuming it, if any.
    pub paused_in: Option<&'static str>,
    /// The stream context ids used, one per plugin.
    pub contexts: Vec<u32>,
    /// Every `proxy_set_property` of the stream, in order, named as Envoy's filter state
    /// names it (`wasm.<path>`): what `%FILTER_STATE(...)%` in an access log would print.
    pub filter_state: Vec<(String, Vec<u8>)>,
}

impl Exchange {
    /// A request header as the upstream received it.
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        self.upstream.as_ref().and_then(|u| u.headers.get(name))
    }

    /// The last value written to the filter-state key `key` (`wasm.<name>`), as text.
    pub fn filter_state(&self, key: &str) -> Option<&str> {
        self.filter_state
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}
