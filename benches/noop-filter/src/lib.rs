//! A proxy-wasm filter that fetches every request and response header and does nothing with
//! them: the floor any header-reading wasm filter pays in Envoy, which `make bench-envoy`
//! compares meshtrace against. Built for wasm32 only; natively this crate is empty.

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType, LogLevel};

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
    }}

    struct Root;

    impl Context for Root {}

    impl RootContext for Root {
        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Http))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Http;

    impl Context for Http {}

    impl HttpContext for Http {
        fn on_http_request_headers(&mut self, _n: usize, _end: bool) -> Action {
            // black_box: the point is the host call and the copy; keep them from being elided.
            core::hint::black_box(self.get_http_request_headers_bytes());
            Action::Continue
        }

        fn on_http_response_headers(&mut self, _n: usize, _end: bool) -> Action {
            core::hint::black_box(self.get_http_response_headers_bytes());
            Action::Continue
        }
    }
}
