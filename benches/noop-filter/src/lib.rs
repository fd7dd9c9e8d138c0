//! A proxy-wasm filter that fetches every request and response header and does nothing with
//! them: the floor any header-reading wasm filter pays in Envoy, which `make bench-envoy`
//! compares meshtrace against. Built for wasm32 only; natively this crate is empty.
//!
//! Its plugin configuration can also make it a host-call probe: a JSON object naming the host
//! calls to add per request, and nothing else, so that a filter recording the same facts as
//! meshtrace, with none of its own work, shows the best any such filter can do:
//!
//! ```json
//! {"response_headers": false,
//!  "request_properties": ["connection.id", "xds.cluster_name", "xds.route_name"],
//!  "log_properties": ["response.code", "response.flags", "response.backend_latency"],
//!  "request_clock_reads": 1, "log_clock_reads": 1, "set_request_header": "traceparent"}
//! ```
//!
//! - `response_headers` (default true): fetch the response header map;
//! - `request_headers` (default true): fetch the request header map;
//! - `request_properties` / `log_properties`: `get_property` paths (dot-separated, as in
//!   Envoy's attribute names) read in `on_http_request_headers` / `on_log`;
//! - `request_clock_reads` / `log_clock_reads`: `get_current_time_nanoseconds` calls there;
//! - `set_request_header`: a request header set (replaced) to a W3C `traceparent` value.
//!
//! An empty configuration is the plain floor.

#[cfg(target_arch = "wasm32")]
mod filter {
    use std::rc::Rc;

    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType, LogLevel};
    use serde::Deserialize;

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
            Box::new(Root { probe: Rc::new(Probe::default()) })
        });
    }}

    /// The value set by `set_request_header`: what an injecting tracer writes.
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// The host calls made per request (see the crate documentation).
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Probe {
        request_headers: bool,
        response_headers: bool,
        #[serde(deserialize_with = "paths")]
        request_properties: Vec<Vec<String>>,
        #[serde(deserialize_with = "paths")]
        log_properties: Vec<Vec<String>>,
        request_clock_reads: u32,
        log_clock_reads: u32,
        set_request_header: Option<String>,
    }

    impl Default for Probe {
        fn default() -> Self {
            Self {
                request_headers: true,
                response_headers: true,
                request_properties: Vec::new(),
                log_properties: Vec::new(),
                request_clock_reads: 0,
                log_clock_reads: 0,
                set_request_header: None,
            }
        }
    }

    /// `"connection.id"` as the path `["connection", "id"]`, split once at configuration.
    fn paths<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Vec<String>>, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        Ok(names
            .iter()
            .map(|n| n.split('.').map(str::to_owned).collect())
            .collect())
    }

    struct Root {
        probe: Rc<Probe>,
    }

    impl Context for Root {}

    impl RootContext for Root {
        fn on_configure(&mut self, _size: usize) -> bool {
            let Some(bytes) = self.get_plugin_configuration() else {
                return true;
            };
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return true;
            }
            match serde_json::from_slice::<Probe>(&bytes) {
                Ok(p) => {
                    self.probe = Rc::new(p);
                    true
                }
                Err(e) => {
                    proxy_wasm::hostcalls::log(LogLevel::Error, &format!("noop probe config: {e}"))
                        .ok();
                    false
                }
            }
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Http {
                probe: self.probe.clone(),
            }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Http {
        probe: Rc<Probe>,
    }

    impl Http {
        fn properties_and_clock(&self, paths: &[Vec<String>], clock_reads: u32) {
            for path in paths {
                core::hint::black_box(self.get_property(path.iter().map(String::as_str).collect()));
            }
            for _ in 0..clock_reads {
                core::hint::black_box(self.get_current_time());
            }
        }
    }

    impl Context for Http {}

    impl HttpContext for Http {
        fn on_http_request_headers(&mut self, _n: usize, _end: bool) -> Action {
            // black_box: the point is the host call and the copy; keep them from being elided.
            if self.probe.request_headers {
                core::hint::black_box(self.get_http_request_headers_bytes());
            }
            if let Some(name) = &self.probe.set_request_header {
                self.set_http_request_header(name, Some(TRACEPARENT));
            }
            self.properties_and_clock(
                &self.probe.request_properties,
                self.probe.request_clock_reads,
            );
            Action::Continue
        }

        fn on_http_response_headers(&mut self, _n: usize, _end: bool) -> Action {
            if self.probe.response_headers {
                core::hint::black_box(self.get_http_response_headers_bytes());
            }
            Action::Continue
        }

        fn on_log(&mut self) {
            self.properties_and_clock(&self.probe.log_properties, self.probe.log_clock_reads);
        }
    }
}
