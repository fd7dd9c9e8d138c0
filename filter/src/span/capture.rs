//! What request data may leave the proxy: header capture by allowlist only, secrets always
//! redacted, the query string off unless asked for, and caps on attribute size and count.

use serde::Deserialize;

use crate::error::ConfigError;
use crate::span::SpanRecord;

/// Headers whose values are credentials: captured only as `REDACTED`, whatever the config says.
pub const ALWAYS_REDACTED: [&str; 4] = [
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
];

/// The value that replaces a redacted header.
pub const REDACTED: &[u8] = b"REDACTED";

/// `capture` in the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Request headers recorded as `http.request.header.<name>`.
    pub request_headers: Vec<String>,
    /// Response headers recorded as `http.response.header.<name>`.
    pub response_headers: Vec<String>,
    /// More names whose values are replaced by `REDACTED`.
    pub redact: Vec<String>,
    /// Record `url.query`.
    pub query: bool,
}
crate::config::section::object_section!(CaptureConfig);

/// `limits` in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct Limits {
    /// Longest string value, in bytes; longer ones are cut at a UTF-8 boundary.
    pub max_attribute_value_bytes: u32,
    /// Most attributes per span; the rest are counted as dropped.
    pub max_attributes: u32,
    /// Longest span name, in bytes; the route in it is cut (at a UTF-8 boundary) to fit, and
    /// `http.route` carries the same cut (see [`crate::span::name`]).
    pub max_span_name_bytes: u32,
    /// Most distinct span names the path templater hands out per VM; past it, a new name
    /// falls back to `{method}` and `meshtrace.span_names.overflow` counts it.
    pub max_span_names: u32,
}
crate::config::section::object_section!(Limits);

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_attribute_value_bytes: 256,
            max_attributes: 64,
            max_span_name_bytes: 256,
            max_span_names: 1000,
        }
    }
}

impl Limits {
    /// Checks both caps' ranges.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field and its value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(16..=65_536).contains(&self.max_attribute_value_bytes) {
            return Err(ConfigError::new(
                "limits.max_attribute_value_bytes",
                format!(
                    "must be between 16 and 65536, got {}",
                    self.max_attribute_value_bytes
                ),
            ));
        }
        if !(8..=1024).contains(&self.max_attributes) {
            return Err(ConfigError::new(
                "limits.max_attributes",
                format!("must be between 8 and 1024, got {}", self.max_attributes),
            ));
        }
        if !(16..=65_536).contains(&self.max_span_name_bytes) {
            return Err(ConfigError::new(
                "limits.max_span_name_bytes",
                format!(
                    "must be between 16 and 65536, got {}",
                    self.max_span_name_bytes
                ),
            ));
        }
        if !(1..=100_000).contains(&self.max_span_names) {
            return Err(ConfigError::new(
                "limits.max_span_names",
                format!("must be between 1 and 100000, got {}", self.max_span_names),
            ));
        }
        Ok(())
    }
}

/// One header to capture: its lowercase name and whether its value is hidden.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Captured {
    name: Box<[u8]>,
    redact: bool,
}

/// The compiled capture rules, built once per VM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capture {
    request: Vec<Captured>,
    response: Vec<Captured>,
    /// Record `url.query`.
    pub query: bool,
}

/// Which message a header came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The request headers.
    Request,
    /// The response headers.
    Response,
}

impl Capture {
    /// The capture lists of `c`, lowercased, with redaction resolved.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first entry that is not a header name.
    pub fn compile(c: &CaptureConfig) -> Result<Self, ConfigError> {
        let redact = names("capture.redact", &c.redact)?;
        let build = |field: &str, list: &[String]| -> Result<Vec<Captured>, ConfigError> {
            Ok(names(field, list)?
                .into_iter()
                .map(|name| {
                    let hidden = ALWAYS_REDACTED.iter().any(|r| r.as_bytes() == &*name)
                        || redact.contains(&name);
                    Captured {
                        name,
                        redact: hidden,
                    }
                })
                .collect())
        };
        Ok(Self {
            request: build("capture.request_headers", &c.request_headers)?,
            response: build("capture.response_headers", &c.response_headers)?,
            query: c.query,
        })
    }

    /// Whether any header of `side` is captured (so callers skip fetching or scanning).
    pub fn any(&self, side: Side) -> bool {
        !self.list(side).is_empty()
    }

    fn list(&self, side: Side) -> &[Captured] {
        match side {
            Side::Request => &self.request,
            Side::Response => &self.response,
        }
    }

    /// Records each allowlisted header present in `headers` as a string array of its values
    /// (one per field, in order), or `["REDACTED"]` for a secret.
    pub fn record<'h>(
        &self,
        side: Side,
        headers: impl Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
        rec: &mut SpanRecord,
    ) {
        let prefix: &[u8] = match side {
            Side::Request => b"http.request.header.",
            Side::Response => b"http.response.header.",
        };
        for c in self.list(side) {
            let mut values = headers
                .clone()
                .filter(|(k, _)| k.eq_ignore_ascii_case(&c.name))
                .map(|(_, v)| v)
                .peekable();
            if values.peek().is_none() {
                continue;
            }
            if c.redact {
                rec.str_array_dyn(&[prefix, &c.name], [REDACTED]);
            } else {
                rec.str_array_dyn(&[prefix, &c.name], values);
            }
        }
    }
}

/// Validates and lowercases header names; errors name the entry.
fn names(field: &str, list: &[String]) -> Result<Vec<Box<[u8]>>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, n)| {
            let token = !n.is_empty()
                && n.len() <= 128
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if token {
                Ok(n.to_ascii_lowercase().into_bytes().into())
            } else {
                Err(ConfigError::new(
                    &format!("{field}[{i}]"),
                    format!("expected a header name, got {n:?}"),
                ))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(json: &str) -> Result<Capture, String> {
        let c: CaptureConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Capture::compile(&c).map_err(|e| e.to_string())
    }

    use crate::test_support::str_array_attr as array;

    const HEADERS: [(&[u8], &[u8]); 6] = [
        (b"x-tenant", b"acme"),
        (b"Authorization", b"Bearer secret"),
        (b"x-tenant", b"beta"),
        (b"x-api-key", b"k-123"),
        (b"cookie", b"session=abc"),
        (b"x-other", b"ignored"),
    ];

    #[test]
    fn allowlist_only_with_redaction() {
        let c = capture(
            r#"{"request_headers": ["X-Tenant", "authorization", "x-api-key", "cookie", "x-missing"],
                "redact": ["X-API-KEY"]}"#,
        )
        .unwrap();
        assert!(c.any(Side::Request));
        assert!(!c.any(Side::Response));
        let mut rec = SpanRecord::default();
        c.record(Side::Request, HEADERS.iter().copied(), &mut rec);
        assert_eq!(
            array(&rec, "http.request.header.x-tenant"),
            Some(vec!["acme".into(), "beta".into()])
        );
        for secret in ["authorization", "x-api-key", "cookie"] {
            assert_eq!(
                array(&rec, &format!("http.request.header.{secret}")),
                Some(vec!["REDACTED".into()]),
                "{secret}"
            );
        }
        assert_eq!(rec.get("http.request.header.x-missing"), None);
        assert_eq!(rec.get("http.request.header.x-other"), None);
        assert_eq!(rec.attrs.len(), 4);
    }

    #[test]
    fn response_headers_and_set_cookie() {
        let c = capture(r#"{"response_headers": ["set-cookie", "x-cache"]}"#).unwrap();
        let mut rec = SpanRecord::default();
        let h: [(&[u8], &[u8]); 2] = [(b"set-cookie", b"id=1"), (b"x-cache", b"HIT")];
        c.record(Side::Response, h.iter().copied(), &mut rec);
        assert_eq!(
            array(&rec, "http.response.header.set-cookie"),
            Some(vec!["REDACTED".into()])
        );
        assert_eq!(
            array(&rec, "http.response.header.x-cache"),
            Some(vec!["HIT".into()])
        );
    }

    #[test]
    fn values_are_capped() {
        let c = capture(r#"{"request_headers": ["x-long"]}"#).unwrap();
        let mut rec = SpanRecord::default();
        rec.max_value_len = 4;
        let h: [(&[u8], &[u8]); 1] = [(b"x-long", b"abcdefgh")];
        c.record(Side::Request, h.iter().copied(), &mut rec);
        assert_eq!(
            array(&rec, "http.request.header.x-long"),
            Some(vec!["abcd".into()])
        );
    }

    #[test]
    fn config_errors() {
        assert_eq!(
            capture(r#"{"request_headers": ["ok", "bad name"]}"#).unwrap_err(),
            "capture.request_headers[1]: expected a header name, got \"bad name\""
        );
        assert_eq!(
            capture(r#"{"redact": [""]}"#).unwrap_err(),
            "capture.redact[0]: expected a header name, got \"\""
        );
        assert_eq!(
            Limits {
                max_attribute_value_bytes: 0,
                ..Limits::default()
            }
            .validate()
            .unwrap_err()
            .to_string(),
            "limits.max_attribute_value_bytes: must be between 16 and 65536, got 0"
        );
        assert_eq!(
            Limits {
                max_attributes: 2000,
                ..Limits::default()
            }
            .validate()
            .unwrap_err()
            .to_string(),
            "limits.max_attributes: must be between 8 and 1024, got 2000"
        );
        assert_eq!(
            Limits {
                max_span_name_bytes: 8,
                ..Limits::default()
            }
            .validate()
            .unwrap_err()
            .to_string(),
            "limits.max_span_name_bytes: must be between 16 and 65536, got 8"
        );
        assert_eq!(
            Limits {
                max_span_names: 0,
                ..Limits::default()
            }
            .validate()
            .unwrap_err()
            .to_string(),
            "limits.max_span_names: must be between 1 and 100000, got 0"
        );
        assert!(Limits::default().validate().is_ok());
        let c = capture("{}").unwrap();
        assert!(!c.query && !c.any(Side::Request));
    }
}
