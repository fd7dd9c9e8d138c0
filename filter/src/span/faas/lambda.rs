//! AWS Lambda behind the mesh: CLIENT spans of requests Envoy's `envoy.filters.http.aws_lambda`
//! filter turns into Lambda `Invoke` calls.
//!
//! meshtrace cannot read the aws_lambda filter's configuration, so the function each Lambda
//! cluster invokes is configured here, keyed by the cluster name the glue already reads for
//! every recorded request (`faas.lambda: [{"cluster": …, "arn": …}]`): no extra host call.
//!
//! Attributes follow the OpenTelemetry FaaS conventions for outgoing invocations (v1.44.0,
//! `docs/faas/faas-spans.md`, `docs/faas/aws-lambda.md`, Development): `faas.invoked_name`
//! (the function name without its qualifier), `faas.invoked_provider` (`aws`),
//! `faas.invoked_region` (from the ARN), `aws.lambda.invoked_arn`, and `aws.request_id` from
//! the `x-amzn-requestid` response header. A function error (`X-Amz-Function-Error`, sent
//! with a 200, Lambda Invoke API `API_Invoke.md`) makes the span an error with `error.type` =
//! its value. With `faas.lambda_log_tail`, the `REPORT` line of the log tail
//! (`X-Amz-Log-Result`, base64) gives the cold start (`Init Duration`) and the billed
//! duration and memory; nothing else of the log is recorded.

use serde::Deserialize;

use crate::error::ConfigError;
use crate::span::{SpanKind, SpanRecord, StatusCode};

/// The response header naming a function error (`Unhandled` or `Handled`).
pub const FUNCTION_ERROR: &str = "x-amz-function-error";
/// The response header with the AWS request id.
pub const REQUEST_ID: &str = "x-amzn-requestid";
/// The response header naming the version an alias resolved to.
pub const EXECUTED_VERSION: &str = "x-amz-executed-version";
/// The response header with the base64 log tail (last 4 KB of the log).
pub const LOG_RESULT: &str = "x-amz-log-result";
/// The request header asking Lambda for the log tail.
pub const LOG_TYPE: &str = "x-amz-log-type";
/// The X-Ray trace header Lambda reads (PassThrough and Active tracing).
pub const TRACE_HEADER: &str = "x-amzn-trace-id";

/// The log tail Lambda returns is at most 4 KB; its base64 is a third longer.
const MAX_LOG: usize = 4096;
const MAX_LOG_BASE64: usize = MAX_LOG.div_ceil(3) * 4;
/// Longest function name Lambda accepts.
const MAX_NAME: usize = 64;
/// Longest qualifier (alias or version) Lambda accepts.
const MAX_QUALIFIER: usize = 128;

/// One entry of `faas.lambda`: the function a cluster invokes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct LambdaUpstream {
    /// The Envoy cluster name (`xds.cluster_name`) routed to the aws_lambda filter.
    pub cluster: String,
    /// The function ARN, as in the aws_lambda filter's `arn`:
    /// `arn:<partition>:lambda:<region>:<account>:function:<name>[:<qualifier>]`.
    pub arn: String,
    /// The filter's `invocation_mode`: `synchronous` (default, `RequestResponse`) or
    /// `asynchronous` (`Event`).
    #[serde(default)]
    pub invocation_mode: Option<String>,
}
crate::config::section::object_section!(LambdaUpstream);

/// A Lambda function ARN's parts (AWS `API_Invoke.md`, Envoy's aws_lambda `arn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arn<'a> {
    /// `aws`, `aws-cn`, `aws-us-gov`, …
    pub partition: &'a str,
    /// e.g. `us-east-1`.
    pub region: &'a str,
    /// The 12-digit account id.
    pub account: &'a str,
    /// The function name, 1 to 64 of `A-Za-z0-9-_`.
    pub name: &'a str,
    /// The alias or version (`$LATEST`, `7`, `live`), when the ARN names one.
    pub qualifier: Option<&'a str>,
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

impl<'a> Arn<'a> {
    /// Parses `arn:<partition>:lambda:<region>:<account>:function:<name>[:<qualifier>]`;
    /// `None` for anything else (another service, a layer, a bad name or account).
    pub fn parse(arn: &'a str) -> Option<Self> {
        let mut p = arn.split(':');
        let (prefix, partition, service, region, account, kind, name) = (
            p.next()?,
            p.next()?,
            p.next()?,
            p.next()?,
            p.next()?,
            p.next()?,
            p.next()?,
        );
        let qualifier = p.next();
        let ok = prefix == "arn"
            && !partition.is_empty()
            && partition
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '-')
            && service == "lambda"
            && !region.is_empty()
            && region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && kind == "function"
            && !name.is_empty()
            && name.len() <= MAX_NAME
            && name.chars().all(name_char)
            && qualifier.is_none_or(|q| {
                !q.is_empty()
                    && q.len() <= MAX_QUALIFIER
                    && (q == "$LATEST" || q.chars().all(name_char))
            })
            && p.next().is_none();
        ok.then_some(Self {
            partition,
            region,
            account,
            name,
            qualifier,
        })
    }
}

/// A configured Lambda upstream, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Function {
    cluster: String,
    arn: String,
    name: String,
    region: String,
    invocation_type: &'static str,
}

impl Function {
    /// The ARN as configured (`aws.lambda.invoked_arn`).
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// `RequestResponse` or `Event`, as the aws_lambda filter sends `X-Amz-Invocation-Type`.
    pub fn invocation_type(&self) -> &'static str {
        self.invocation_type
    }
}

/// The compiled Lambda settings: the upstreams, whether to read the log tail, the price.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lambda {
    functions: Vec<Function>,
    log_tail: bool,
    price_per_gb_second: Option<f64>,
}

impl Lambda {
    /// Compiles `faas.lambda`, `faas.lambda_log_tail` and `faas.lambda_price_per_gb_second`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the entry and value: `faas.lambda[0].arn: expected
    /// arn:<partition>:lambda:<region>:<account>:function:<name>[:<qualifier>], got "x"`,
    /// `faas.lambda[1].cluster: must be a non-empty string`, `faas.lambda[1].cluster: "c"
    /// is listed twice`, `faas.lambda[0].invocation_mode: expected synchronous or
    /// asynchronous, got "x"`, `faas.lambda_price_per_gb_second: must be a finite number
    /// >= 0, got -1`.
    pub fn compile(
        upstreams: &[LambdaUpstream],
        log_tail: bool,
        price: Option<f64>,
    ) -> Result<Self, ConfigError> {
        let mut functions: Vec<Function> = Vec::with_capacity(upstreams.len());
        for (i, u) in upstreams.iter().enumerate() {
            let field = |f: &str| format!("faas.lambda[{i}].{f}");
            if u.cluster.trim().is_empty() {
                return Err(ConfigError::new(
                    &field("cluster"),
                    "must be a non-empty string",
                ));
            }
            if functions.iter().any(|f| f.cluster == u.cluster) {
                return Err(ConfigError::new(
                    &field("cluster"),
                    format!("{:?} is listed twice", u.cluster),
                ));
            }
            let arn = Arn::parse(&u.arn).ok_or_else(|| {
                ConfigError::new(
                    &field("arn"),
                    format!(
                        "expected arn:<partition>:lambda:<region>:<account>:function:<name>[:<qualifier>], got {:?}",
                        u.arn
                    ),
                )
            })?;
            let invocation_type = match u.invocation_mode.as_deref() {
                None | Some("synchronous") => "RequestResponse",
                Some("asynchronous") => "Event",
                Some(other) => {
                    return Err(ConfigError::new(
                        &field("invocation_mode"),
                        format!("expected synchronous or asynchronous, got {other:?}"),
                    ))
                }
            };
            functions.push(Function {
                cluster: u.cluster.clone(),
                arn: u.arn.clone(),
                name: arn.name.to_owned(),
                region: arn.region.to_owned(),
                invocation_type,
            });
        }
        if let Some(p) = price {
            if !p.is_finite() || p < 0.0 {
                return Err(ConfigError::new(
                    "faas.lambda_price_per_gb_second",
                    format!("must be a finite number >= 0, got {p}"),
                ));
            }
        }
        Ok(Self {
            functions,
            log_tail,
            price_per_gb_second: price,
        })
    }

    /// Whether any Lambda upstream is configured.
    pub fn any(&self) -> bool {
        !self.functions.is_empty()
    }

    /// Whether the log tail is asked for (`faas.lambda_log_tail`).
    pub fn log_tail(&self) -> bool {
        self.log_tail
    }

    /// The index of the function `cluster` invokes, if it is a Lambda upstream.
    pub fn lookup(&self, cluster: &[u8]) -> Option<u8> {
        self.functions
            .iter()
            .position(|f| f.cluster.as_bytes() == cluster)
            .and_then(|i| u8::try_from(i).ok())
    }

    /// The function at `index` (from [`Lambda::lookup`]).
    pub fn function(&self, index: u8) -> Option<&Function> {
        self.functions.get(usize::from(index))
    }

    /// The request headers a recorded request to a Lambda upstream gets besides the trace
    /// context: `X-Amz-Log-Type: Tail` with `faas.lambda_log_tail`.
    pub fn request_headers(&self) -> Option<(&'static str, &'static [u8])> {
        self.log_tail.then_some((LOG_TYPE, b"Tail"))
    }

    /// Records the invocation on a CLIENT span: the function (`faas.invoked_*`,
    /// `aws.lambda.invoked_arn`, `aws.lambda.invocation_type`), what the response said
    /// ([`Invocation`]), a function error as the span's error, and the REPORT line's facts
    /// with the estimated cost.
    pub fn finish(&self, rec: &mut SpanRecord, kind: SpanKind, index: u8, inv: &Invocation<'_>) {
        let Some(f) = self.function(index) else {
            return;
        };
        if kind != SpanKind::Client {
            return;
        }
        rec.str("faas.invoked_name", f.name.as_bytes());
        rec.str("faas.invoked_provider", b"aws");
        rec.str("faas.invoked_region", f.region.as_bytes());
        rec.str("aws.lambda.invoked_arn", f.arn.as_bytes());
        rec.str("aws.lambda.invocation_type", f.invocation_type.as_bytes());
        if let Some(id) = inv.request_id {
            rec.str("aws.request_id", id);
        }
        if let Some(v) = inv.executed_version {
            rec.str("aws.lambda.executed_version", v);
        }
        if let Some(e) = inv.function_error {
            // The HTTP status is a 200: the function failed, the API call did not.
            if rec.status != StatusCode::Error {
                rec.status = StatusCode::Error;
                rec.str("error.type", e);
            }
        }
        if let Some(r) = inv.report {
            rec.double("aws.lambda.duration_ms", r.duration_ms);
            rec.int("aws.lambda.billed_duration_ms", r.billed_duration_ms as i64);
            rec.int("aws.lambda.memory_size_mb", r.memory_size_mb as i64);
            rec.int("aws.lambda.max_memory_used_mb", r.max_memory_used_mb as i64);
            if let Some(init) = r.init_duration_ms {
                rec.bool("faas.coldstart", true);
                rec.double("aws.lambda.init_duration_ms", init);
            }
            if let Some(price) = self.price_per_gb_second {
                rec.double("aws.lambda.estimated_cost_usd", r.cost(price));
            }
        }
    }
}

/// The facts of one `REPORT` line (AWS `python-logging.md` §Report Log): durations in
/// milliseconds, memory in MB.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Report {
    /// `Duration`: the handler's time, ms.
    pub duration_ms: f64,
    /// `Billed Duration`, ms.
    pub billed_duration_ms: u64,
    /// `Memory Size`: configured memory, MB.
    pub memory_size_mb: u64,
    /// `Max Memory Used`: peak memory, MB.
    pub max_memory_used_mb: u64,
    /// `Init Duration`, present only on an execution environment's first request: a cold
    /// start, ms.
    pub init_duration_ms: Option<f64>,
}

impl Report {
    /// The duration charge in the price's currency: GB-seconds (`memory MB / 1024 ×
    /// billed ms / 1000`, AWS Lambda pricing) × `price_per_gb_second`. Requests are charged
    /// apart and are not included.
    pub fn cost(&self, price_per_gb_second: f64) -> f64 {
        (self.memory_size_mb as f64 / 1024.0)
            * (self.billed_duration_ms as f64 / 1000.0)
            * price_per_gb_second
    }

    /// Finds the `REPORT` line in a log and reads it; `None` when there is none or it lacks
    /// `Duration`, `Billed Duration` or `Memory Size`. Only that line is looked at.
    pub fn find(log: &[u8]) -> Option<Self> {
        let line = log
            .split(|b| *b == b'\n')
            .find(|l| l.starts_with(b"REPORT RequestId:"))?;
        Self::parse_line(line)
    }

    /// Reads one `REPORT RequestId: … Duration: 12.34 ms Billed Duration: 13 ms Memory
    /// Size: 128 MB Max Memory Used: 70 MB [Init Duration: 150.00 ms]` line (tab- or
    /// space-separated fields).
    pub fn parse_line(line: &[u8]) -> Option<Self> {
        let mut words = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty());
        let (mut duration, mut billed, mut size, mut used, mut init) =
            (None, None, None, None, None);
        let mut prev: &[u8] = b"";
        while let Some(w) = words.next() {
            if !w.ends_with(b":") {
                prev = w;
                continue;
            }
            let value = words.next().and_then(|v| std::str::from_utf8(v).ok());
            match (prev, w) {
                (b"Billed", b"Duration:") => billed = value.and_then(|v| v.parse().ok()),
                (b"Init", b"Duration:") => init = value.and_then(|v| v.parse().ok()),
                (b"Memory", b"Size:") => size = value.and_then(|v| v.parse().ok()),
                (b"Memory", b"Used:") => used = value.and_then(|v| v.parse().ok()),
                (_, b"Duration:") if prev != b"Restore" => {
                    duration = value.and_then(|v| v.parse().ok())
                }
                _ => {}
            }
            prev = b"";
        }
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        Some(Self {
            duration_ms: duration.filter(|v| ok(*v))?,
            billed_duration_ms: billed?,
            memory_size_mb: size?,
            max_memory_used_mb: used.unwrap_or(0),
            init_duration_ms: init.filter(|v| ok(*v)),
        })
    }

    /// Decodes an `X-Amz-Log-Result` value (base64 of at most 4 KB) on the stack and reads
    /// its `REPORT` line; `None` for invalid or oversized base64 or no REPORT line.
    pub fn from_log_result(b64: &[u8]) -> Option<Self> {
        let b64 = b64.trim_ascii();
        if b64.len() > MAX_LOG_BASE64 {
            return None;
        }
        let mut buf = [0u8; MAX_LOG];
        let n = crate::base64::decode(b64, &mut buf)?;
        Self::find(&buf[..n])
    }
}

/// What a Lambda response said, from its headers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Invocation<'a> {
    /// `x-amzn-requestid` (also `x-amzn-request-id`, `x-amz-request-id`).
    pub request_id: Option<&'a [u8]>,
    /// `x-amz-function-error`.
    pub function_error: Option<&'a [u8]>,
    /// `x-amz-executed-version`.
    pub executed_version: Option<&'a [u8]>,
    /// The `REPORT` line of `x-amz-log-result`, when asked for and valid.
    pub report: Option<Report>,
}

impl<'a> Invocation<'a> {
    /// Reads the response headers (lower-case names, as Envoy hands them over). The log tail
    /// is decoded only when `log_tail` is on; an invalid one is left out and counted by the
    /// caller through `invalid_log`.
    pub fn from_headers(
        pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        log_tail: bool,
        invalid_log: &mut bool,
    ) -> Self {
        let mut inv = Self::default();
        for (k, v) in pairs {
            if k.eq_ignore_ascii_case(REQUEST_ID.as_bytes())
                || k.eq_ignore_ascii_case(b"x-amzn-request-id")
                || k.eq_ignore_ascii_case(b"x-amz-request-id")
            {
                inv.request_id.get_or_insert(v);
            } else if k.eq_ignore_ascii_case(FUNCTION_ERROR.as_bytes()) {
                inv.function_error = Some(v).filter(|v| !v.is_empty());
            } else if k.eq_ignore_ascii_case(EXECUTED_VERSION.as_bytes()) {
                inv.executed_version = Some(v);
            } else if log_tail && k.eq_ignore_ascii_case(LOG_RESULT.as_bytes()) {
                inv.report = Report::from_log_result(v);
                *invalid_log |= inv.report.is_none();
            }
        }
        inv
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Value;
    use crate::test_support::str_attr as s;

    const ARN: &str = "arn:aws:lambda:eu-west-1:123456789012:function:thumbnails:live";
    const COLD: &str = "START RequestId: 8f5 Version: $LATEST\nsecret user data\nEND RequestId: 8f5\nREPORT RequestId: 8f5\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 70 MB\tInit Duration: 150.00 ms\t\nXRAY TraceId: 1-5759e988-bd862e3fe1be46a994272793\tSegmentId: 53995c3f42cd8ad8\tSampled: true\n";
    const WARM: &str =
        "REPORT RequestId: 9a1 Duration: 2.50 ms Billed Duration: 3 ms Memory Size: 1024 MB Max Memory Used: 80 MB\n";

    proptest::proptest! {
        /// Any bytes a response or a config carries: no panic, and a parsed report is sane.
        #[test]
        fn any_input_is_parsed_or_refused(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300), text in ".{0,120}") {
            if let Some(r) = Report::find(&bytes) {
                proptest::prop_assert!(r.duration_ms.is_finite() && r.duration_ms >= 0.0);
            }
            let _ = Report::from_log_result(&bytes);
            let _ = Report::parse_line(text.as_bytes());
            let _ = Arn::parse(&text);
            let mut invalid = false;
            let pairs = [(&b"x-amz-log-result"[..], &bytes[..]), (b"x-amzn-requestid", &bytes[..])];
            let inv = Invocation::from_headers(pairs.iter().copied(), true, &mut invalid);
            proptest::prop_assert_eq!(inv.request_id, Some(&bytes[..]));
        }
    }

    #[test]
    fn arns_are_parsed_and_bad_ones_refused() {
        let a = Arn::parse(ARN).unwrap();
        assert_eq!(
            a,
            Arn {
                partition: "aws",
                region: "eu-west-1",
                account: "123456789012",
                name: "thumbnails",
                qualifier: Some("live"),
            }
        );
        let a = Arn::parse("arn:aws-cn:lambda:cn-north-1:123456789012:function:f_1").unwrap();
        assert_eq!((a.partition, a.name, a.qualifier), ("aws-cn", "f_1", None));
        let latest = "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST";
        assert_eq!(Arn::parse(latest).unwrap().qualifier, Some("$LATEST"));
        let long = format!(
            "arn:aws:lambda:us-east-1:123456789012:function:{}",
            "a".repeat(65)
        );
        for bad in [
            "",
            "thumbnails",
            "arn:aws:s3:eu-west-1:123456789012:function:f",
            "arn:aws:lambda:eu-west-1:1234:function:f",
            "arn:aws:lambda:eu-west-1:123456789012:layer:f",
            "arn:aws:lambda:eu-west-1:123456789012:function:",
            "arn:aws:lambda:eu-west-1:123456789012:function:f:",
            "arn:aws:lambda:eu-west-1:123456789012:function:f:1:2",
            "arn:aws:lambda:eu-west-1:123456789012:function:f.x",
            "arn:aws:lambda::123456789012:function:f",
            long.as_str(),
        ] {
            assert_eq!(Arn::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_report_line_gives_durations_memory_and_the_cold_start() {
        let r = Report::find(COLD.as_bytes()).unwrap();
        assert_eq!(
            r,
            Report {
                duration_ms: 12.34,
                billed_duration_ms: 13,
                memory_size_mb: 128,
                max_memory_used_mb: 70,
                init_duration_ms: Some(150.0),
            }
        );
        let r = Report::find(WARM.as_bytes()).unwrap();
        assert_eq!(r.init_duration_ms, None);
        assert_eq!((r.billed_duration_ms, r.memory_size_mb), (3, 1024));
        // 1 GB for 3 ms at $0.00001667 per GB-s.
        assert!((r.cost(0.000_016_67) - 0.000_000_050_01).abs() < 1e-15);
        // SnapStart's restore is not the handler's duration.
        let snap = "REPORT RequestId: x Restore Duration: 300.00 ms Duration: 5.00 ms Billed Duration: 5 ms Memory Size: 128 MB Max Memory Used: 60 MB";
        assert_eq!(Report::find(snap.as_bytes()).unwrap().duration_ms, 5.0);
        for bad in [
            "",
            "START RequestId: x\n",
            "REPORT RequestId: x Duration: 1 ms",
            "REPORT RequestId: x Duration: -1 ms Billed Duration: 1 ms Memory Size: 128 MB",
            "REPORT RequestId: x Duration: 1 ms Billed Duration: x ms Memory Size: 128 MB",
            "REPORT RequestId: x Duration: NaN ms Billed Duration: 1 ms Memory Size: 128 MB",
            "REPORT RequestId: x Duration:",
        ] {
            assert_eq!(Report::find(bad.as_bytes()), None, "{bad}");
        }
    }

    fn b64(s: &str) -> Vec<u8> {
        let mut out = vec![0; s.len().div_ceil(3) * 4];
        let n = crate::base64::encode(s.as_bytes(), &mut out, true).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn the_log_result_is_decoded_and_only_its_report_line_read() {
        assert_eq!(
            Report::from_log_result(&b64(COLD)),
            Report::find(COLD.as_bytes())
        );
        assert_eq!(Report::from_log_result(b"!!!"), None);
        let huge = b64(&"x".repeat(MAX_LOG + 1));
        assert_eq!(Report::from_log_result(&huge), None);
        let tail = b64(WARM);
        let pairs = [
            (&b"x-amzn-requestid"[..], &b"8f5-req"[..]),
            (b"x-amz-function-error", b"Unhandled"),
            (b"x-amz-executed-version", b"7"),
            (b"x-amz-log-result", &tail[..]),
        ];
        let mut invalid = false;
        let inv = Invocation::from_headers(pairs.iter().copied(), true, &mut invalid);
        assert_eq!(inv.request_id, Some(&b"8f5-req"[..]));
        assert_eq!(inv.function_error, Some(&b"Unhandled"[..]));
        assert_eq!(inv.executed_version, Some(&b"7"[..]));
        assert_eq!(inv.report, Report::find(WARM.as_bytes()));
        assert!(!invalid);
        // Without the opt-in the tail is not even decoded.
        let inv = Invocation::from_headers(pairs.iter().copied(), false, &mut invalid);
        assert_eq!(inv.report, None);
        let bad = [(&b"x-amz-log-result"[..], &b"%%"[..])];
        let inv = Invocation::from_headers(bad.iter().copied(), true, &mut invalid);
        assert_eq!(inv.report, None);
        assert!(invalid);
    }

    fn lambda(extra: &str) -> Lambda {
        let c: crate::span::faas::FaasConfig = serde_json::from_str(&format!(
            r#"{{"lambda": [{{"cluster": "lambda_thumbnails", "arn": "{ARN}"}}]{extra}}}"#
        ))
        .unwrap();
        Lambda::compile(&c.lambda, c.lambda_log_tail, c.lambda_price_per_gb_second).unwrap()
    }

    #[test]
    fn config_errors_name_the_entry_and_value() {
        let bad = |json: &str| {
            let c: crate::span::faas::FaasConfig = serde_json::from_str(json).unwrap();
            Lambda::compile(&c.lambda, c.lambda_log_tail, c.lambda_price_per_gb_second)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            bad(r#"{"lambda": [{"cluster": "c", "arn": "f"}]}"#),
            "faas.lambda[0].arn: expected arn:<partition>:lambda:<region>:<account>:function:<name>[:<qualifier>], got \"f\""
        );
        let twice = format!(
            r#"{{"lambda": [{{"cluster": "c", "arn": "{ARN}"}}, {{"cluster": "c", "arn": "{ARN}"}}]}}"#
        );
        assert_eq!(bad(&twice), "faas.lambda[1].cluster: \"c\" is listed twice");
        assert_eq!(
            bad(&format!(
                r#"{{"lambda": [{{"cluster": " ", "arn": "{ARN}"}}]}}"#
            )),
            "faas.lambda[0].cluster: must be a non-empty string"
        );
        assert_eq!(
            bad(&format!(
                r#"{{"lambda": [{{"cluster": "c", "arn": "{ARN}", "invocation_mode": "dry"}}]}}"#
            )),
            "faas.lambda[0].invocation_mode: expected synchronous or asynchronous, got \"dry\""
        );
        assert_eq!(
            bad(r#"{"lambda_price_per_gb_second": -1}"#),
            "faas.lambda_price_per_gb_second: must be a finite number >= 0, got -1"
        );
    }

    #[test]
    fn a_client_span_to_a_lambda_carries_the_faas_attributes() {
        let l = lambda(r#","lambda_log_tail": true, "lambda_price_per_gb_second": 0.0000166667"#);
        assert_eq!(l.lookup(b"other"), None);
        let i = l.lookup(b"lambda_thumbnails").unwrap();
        assert_eq!(l.request_headers(), Some(("x-amz-log-type", &b"Tail"[..])));
        let inv = Invocation {
            request_id: Some(b"8f5-req"),
            function_error: Some(b"Unhandled"),
            executed_version: Some(b"7"),
            report: Report::find(COLD.as_bytes()),
        };
        let mut rec = SpanRecord::default();
        l.finish(&mut rec, SpanKind::Client, i, &inv);
        assert_eq!(s(&rec, "faas.invoked_name").as_deref(), Some("thumbnails"));
        assert_eq!(s(&rec, "faas.invoked_provider").as_deref(), Some("aws"));
        assert_eq!(s(&rec, "faas.invoked_region").as_deref(), Some("eu-west-1"));
        assert_eq!(s(&rec, "aws.lambda.invoked_arn").as_deref(), Some(ARN));
        assert_eq!(
            s(&rec, "aws.lambda.invocation_type").as_deref(),
            Some("RequestResponse")
        );
        assert_eq!(s(&rec, "aws.request_id").as_deref(), Some("8f5-req"));
        assert_eq!(s(&rec, "aws.lambda.executed_version").as_deref(), Some("7"));
        assert_eq!(rec.status, StatusCode::Error);
        assert_eq!(s(&rec, "error.type").as_deref(), Some("Unhandled"));
        assert_eq!(rec.get("faas.coldstart"), Some(&Value::Bool(true)));
        assert_eq!(
            rec.get("aws.lambda.init_duration_ms"),
            Some(&Value::Double(150.0))
        );
        assert_eq!(
            rec.get("aws.lambda.duration_ms"),
            Some(&Value::Double(12.34))
        );
        assert_eq!(
            rec.get("aws.lambda.billed_duration_ms"),
            Some(&Value::Int(13))
        );
        assert_eq!(rec.get("aws.lambda.memory_size_mb"), Some(&Value::Int(128)));
        assert_eq!(
            rec.get("aws.lambda.max_memory_used_mb"),
            Some(&Value::Int(70))
        );
        let cost = 0.125 * 0.013 * 0.000_016_666_7;
        assert_eq!(
            rec.get("aws.lambda.estimated_cost_usd"),
            Some(&Value::Double(cost))
        );
        // A warm, successful call: no error, no cold start; without a price, no cost.
        let l = lambda(r#","lambda_log_tail": true"#);
        let inv = Invocation {
            report: Report::find(WARM.as_bytes()),
            ..Invocation::default()
        };
        let mut rec = SpanRecord::default();
        l.finish(&mut rec, SpanKind::Client, i, &inv);
        assert_eq!(rec.status, StatusCode::Unset);
        assert_eq!(rec.get("error.type"), None);
        assert_eq!(rec.get("faas.coldstart"), None);
        assert_eq!(rec.get("aws.lambda.estimated_cost_usd"), None);
        assert_eq!(
            rec.get("aws.lambda.billed_duration_ms"),
            Some(&Value::Int(3))
        );
        // Server spans are not invocations.
        let mut rec = SpanRecord::default();
        l.finish(&mut rec, SpanKind::Server, i, &inv);
        assert_eq!(rec.get("faas.invoked_name"), None);
        // An asynchronous upstream; no log tail asked for.
        let c: crate::span::faas::FaasConfig = serde_json::from_str(&format!(
            r#"{{"lambda": [{{"cluster": "q", "arn": "{ARN}", "invocation_mode": "asynchronous"}}]}}"#
        ))
        .unwrap();
        let l = Lambda::compile(&c.lambda, false, None).unwrap();
        assert_eq!(l.request_headers(), None);
        assert_eq!(
            l.function(l.lookup(b"q").unwrap())
                .unwrap()
                .invocation_type(),
            "Event"
        );
    }
}
