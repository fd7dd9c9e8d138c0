//! Serverless upstreams: CLIENT spans to a function on a cloud platform (GCP Cloud Run and
//! Cloud Functions, Azure Functions, or any provider a rule names), from configured rules
//! (`faas.upstreams`).
//!
//! Follows the OpenTelemetry FaaS conventions for outgoing invocations (v1.44.0,
//! `docs/faas/faas-spans.md`, "Outgoing Invocations"): `faas.invoked_name` (required),
//! `faas.invoked_provider` and `faas.invoked_region` (where the region is part of the
//! endpoint).
//!
//! A rule matches the request's `:authority` (`host`, port ignored, ASCII case-insensitive) or
//! the upstream cluster's name (`xds.cluster_name`). A pattern is exact, or `*` followed by a
//! suffix (`*.run.app`). The first matching rule wins, host rules before cluster rules.
//!
//! Where a rule gives no `name` (or `region`), it is derived from the request:
//!
//! | endpoint | `faas.invoked_name` | `faas.invoked_region` |
//! |---|---|---|
//! | `<service>-<hash>-<code>.a.run.app` (Cloud Run) | `<service>`: the first label without its last two `-` parts | none (`<code>` is no region name) |
//! | `<service>-<project number>.<region>.run.app` (Cloud Run) | `<service>` | `<region>` |
//! | `<region>-<project>.cloudfunctions.net/<function>` | `<function>`, the first path segment | `<region>`, the first two `-` parts of the first label |
//! | `<app>.azurewebsites.net/api/<function>` | `<function>` (else `<app>`) | none |
//! | anything else | the first DNS label | none |
//!
//! A cluster rule derives from the host in the cluster name (Istio's
//! `outbound|443||myfn-abc-uc.a.run.app`: the part after the last `|`); it has no path.
//! Derived values come from request data, so they are kept only when they are 1 to
//! [`MAX_DERIVED`] bytes of `[A-Za-z0-9_-]`, copied inline (no allocation).
//!
//! Propagation: a request whose host matches a `gcp` rule receives `X-Cloud-Trace-Context`
//! (what Cloud Run and Cloud Functions read), an `azure` one W3C `traceparent` (what Azure
//! Functions read), whether or not `propagators.inject` lists them. Only host rules decide
//! this: it happens on every request, unsampled too, before the cluster name is read (a
//! host call spent only on recorded requests), and never with `direction: inbound`.

use serde::Deserialize;

use super::{Finish, SpanKind, SpanRecord};
use crate::error::ConfigError;
use crate::headers::RequestHeaders;
use crate::propagation::Propagator;
use crate::text::split_host_port;

/// Longest derived name or region kept (a DNS label's length, RFC 1123).
pub const MAX_DERIVED: usize = 63;

/// Most rules in `faas.upstreams`: each is tried per request.
pub const MAX_RULES: usize = 64;

/// What a rule matches.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct UpstreamMatch {
    /// The request's `:authority` host: exact, or `*` + suffix (`*.run.app`).
    #[serde(default)]
    pub host: Option<String>,
    /// The upstream cluster's name: exact, or `*` + suffix (`*.a.run.app`).
    #[serde(default)]
    pub cluster: Option<String>,
}
crate::config::section::object_section!(UpstreamMatch);

/// One entry of `faas.upstreams`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct UpstreamRule {
    /// What the rule matches: exactly one of `host` or `cluster`.
    #[serde(rename = "match")]
    pub matches: UpstreamMatch,
    /// `faas.invoked_provider`: `gcp`, `azure`, `aws`, `alibaba_cloud`, `tencent_cloud`
    /// or a custom value. `gcp` and `azure` also choose the injected header.
    pub provider: String,
    /// `faas.invoked_region`; derived from the host when absent (see the module doc).
    #[serde(default)]
    pub region: Option<String>,
    /// `faas.invoked_name`; derived from the host and path when absent.
    #[serde(default)]
    pub name: Option<String>,
}
crate::config::section::object_section!(UpstreamRule);

/// A compiled pattern: exact or suffix, lowercased.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Exact(Vec<u8>),
    Suffix(Vec<u8>),
}

impl Pattern {
    fn compile(field: &str, p: &str) -> Result<Self, ConfigError> {
        let p = p.trim().to_ascii_lowercase();
        let bad = |why: &str| ConfigError::new(field, format!("{why}, got {p:?}"));
        if p.is_empty() || p == "*" {
            return Err(bad("must be a host or `*` followed by a suffix"));
        }
        match p.strip_prefix('*') {
            Some(s) if s.contains('*') => Err(bad("only a leading `*` is allowed")),
            Some(s) => Ok(Self::Suffix(s.as_bytes().to_vec())),
            None if p.contains('*') => Err(bad("only a leading `*` is allowed")),
            None => Ok(Self::Exact(p.into_bytes())),
        }
    }

    fn matches(&self, v: &[u8]) -> bool {
        match self {
            Self::Exact(e) => v.eq_ignore_ascii_case(e),
            Self::Suffix(s) => v.len() > s.len() && v[v.len() - s.len()..].eq_ignore_ascii_case(s),
        }
    }
}

/// A compiled rule.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    pattern: Pattern,
    by_host: bool,
    provider: String,
    region: Option<String>,
    name: Option<String>,
}

/// The compiled `faas.upstreams` rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upstreams {
    rules: Vec<Rule>,
}

/// Checks that an optional text field is non-empty when set.
fn non_empty(field: &str, v: Option<&String>) -> Result<(), ConfigError> {
    match v {
        Some(v) if v.trim().is_empty() => Err(ConfigError::new(
            field,
            format!("must be a non-empty string when set, got {v:?}"),
        )),
        _ => Ok(()),
    }
}

impl Upstreams {
    /// Compiles `faas.upstreams`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field and value, e.g. `faas.upstreams[0].match: expected
    /// exactly one of host or cluster`, `faas.upstreams[1].match.host: only a leading `*` is
    /// allowed, got "a*b"`, `faas.upstreams[2].provider: must be a non-empty string, got ""`,
    /// or more than [`MAX_RULES`] rules.
    pub fn compile(rules: &[UpstreamRule]) -> Result<Self, ConfigError> {
        if rules.len() > MAX_RULES {
            return Err(ConfigError::new(
                "faas.upstreams",
                format!("at most {MAX_RULES} rules, got {}", rules.len()),
            ));
        }
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let at = format!("faas.upstreams[{i}]");
            let (pattern, by_host) = match (&r.matches.host, &r.matches.cluster) {
                (Some(h), None) => (Pattern::compile(&format!("{at}.match.host"), h)?, true),
                (None, Some(c)) => (Pattern::compile(&format!("{at}.match.cluster"), c)?, false),
                _ => {
                    return Err(ConfigError::new(
                        &format!("{at}.match"),
                        "expected exactly one of host or cluster",
                    ))
                }
            };
            if r.provider.trim().is_empty() {
                return Err(ConfigError::new(
                    &format!("{at}.provider"),
                    format!("must be a non-empty string, got {:?}", r.provider),
                ));
            }
            non_empty(&format!("{at}.region"), r.region.as_ref())?;
            non_empty(&format!("{at}.name"), r.name.as_ref())?;
            out.push(Rule {
                pattern,
                by_host,
                provider: r.provider.trim().to_owned(),
                region: r.region.clone(),
                name: r.name.clone(),
            });
        }
        // Host rules first: they are the ones the request-time match uses. (A partition, not
        // a sort: a stable sort's code costs the wasm binary kilobytes for one cold call.)
        let (mut rules, cluster): (Vec<Rule>, Vec<Rule>) = out.into_iter().partition(|r| r.by_host);
        rules.extend(cluster);
        Ok(Self { rules })
    }

    /// Whether any rule is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn by_host(&self, host: &[u8]) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.by_host && r.pattern.matches(host))
    }

    /// The context formats the upstream named by the request's host must receive beyond the
    /// configured ones, a bit per [`Propagator::bit`]: [`Propagator::Gcp`] for a `gcp` rule,
    /// [`Propagator::TraceContext`] for an `azure` one, 0 otherwise. No allocation, no host
    /// call.
    pub fn inject_bits(&self, h: &RequestHeaders<'_>) -> u16 {
        if self.rules.is_empty() {
            return 0;
        }
        let Some(i) = h.authority.and_then(|a| self.by_host(split_host_port(a).0)) else {
            return 0;
        };
        match self.rules[i].provider.as_str() {
            "gcp" => Propagator::Gcp.bit(),
            "azure" => Propagator::TraceContext.bit(),
            _ => 0,
        }
    }

    /// The function a recorded request's host names (host rules only), with what the host
    /// and path give, kept until the span ends.
    pub fn for_request(&self, h: &RequestHeaders<'_>) -> Option<Invoked> {
        if self.rules.is_empty() {
            return None;
        }
        let host = split_host_port(h.authority?).0;
        let rule = self.by_host(host)?;
        Some(Invoked::derive(rule, host, h.path.unwrap_or(b"")))
    }

    /// The function a cluster name names (cluster rules), derived from the host after the
    /// last `|` of an Istio cluster name.
    fn for_cluster(&self, cluster: &[u8]) -> Option<Invoked> {
        let rule = self
            .rules
            .iter()
            .position(|r| !r.by_host && r.pattern.matches(cluster))?;
        let host = cluster.rsplit(|b| *b == b'|').next().unwrap_or(cluster);
        Some(Invoked::derive(rule, host, b""))
    }

    /// `faas.invoked_name`, `faas.invoked_provider` and `faas.invoked_region` on a CLIENT span
    /// to a matched upstream: the request's host match, else the cluster's.
    pub fn finish(&self, rec: &mut SpanRecord, f: &Finish<'_>) {
        if f.kind != SpanKind::Client || self.rules.is_empty() {
            return;
        }
        let Some(inv) = f
            .request
            .invoked
            .or_else(|| f.mesh.cluster_name.and_then(|c| self.for_cluster(c)))
        else {
            return;
        };
        let Some(rule) = self.rules.get(usize::from(inv.rule)) else {
            return;
        };
        // A Lambda upstream's ARN names function, provider and region better than a rule.
        if rec.get("faas.invoked_provider").is_some() {
            return;
        }
        // A Knative revision header may have named the function already.
        let named = rec.get("faas.invoked_name").is_some();
        if let Some(name) = rule.name.as_deref().map(str::as_bytes).or(inv.name()) {
            if !named {
                rec.str("faas.invoked_name", name);
            }
        }
        rec.str("faas.invoked_provider", rule.provider.as_bytes());
        if let Some(region) = rule.region.as_deref().map(str::as_bytes).or(inv.region()) {
            rec.str("faas.invoked_region", region);
        }
    }
}

/// A short text copied inline: a derived name or region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Short {
    buf: [u8; MAX_DERIVED],
    len: u8,
}

impl Short {
    /// `v` when it is 1 to [`MAX_DERIVED`] bytes of `[A-Za-z0-9_-]`.
    fn new(v: &[u8]) -> Option<Self> {
        let ok = !v.is_empty()
            && v.len() <= MAX_DERIVED
            && v.iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
        ok.then(|| {
            let mut s = Self {
                buf: [0; MAX_DERIVED],
                len: v.len() as u8,
            };
            s.buf[..v.len()].copy_from_slice(v);
            s
        })
    }

    fn get(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// The function a request was sent to: the matched rule and what its host and path give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invoked {
    rule: u16,
    name: Option<Short>,
    region: Option<Short>,
}

/// Strips a case-insensitive ASCII suffix.
fn strip_suffix_ci<'a>(v: &'a [u8], suffix: &[u8]) -> Option<&'a [u8]> {
    let cut = v.len().checked_sub(suffix.len())?;
    v[cut..].eq_ignore_ascii_case(suffix).then(|| &v[..cut])
}

/// The `n`-th `/`-separated segment of a path, query and fragment left out.
fn path_segment(path: &[u8], n: usize) -> Option<&[u8]> {
    let end = path
        .iter()
        .position(|b| *b == b'?' || *b == b'#')
        .unwrap_or(path.len());
    path[..end]
        .split(|b| *b == b'/')
        .filter(|s| !s.is_empty())
        .nth(n)
}

/// `v` without its last `n` `-`-separated parts, when it has more than `n`.
fn drop_dash_parts(v: &[u8], n: usize) -> Option<&[u8]> {
    let mut end = v.len();
    for _ in 0..n {
        end = v[..end].iter().rposition(|b| *b == b'-')?;
    }
    (end > 0).then(|| &v[..end])
}

impl Invoked {
    /// Derives the name and region from `host` and `path` (see the module doc's table).
    fn derive(rule: usize, host: &[u8], path: &[u8]) -> Self {
        let host = host.strip_suffix(b".").unwrap_or(host);
        let first = host.split(|b| *b == b'.').next().unwrap_or(b"");
        let (name, region): (Option<&[u8]>, Option<&[u8]>) =
            if let Some(rest) = strip_suffix_ci(host, b".a.run.app") {
                // `<service>-<hash>-<region code>`: the code is no region name.
                (drop_dash_parts(rest, 2).or(Some(first)), None)
            } else if let Some(rest) = strip_suffix_ci(host, b".run.app") {
                // `<service>-<project number>.<region>`.
                let mut labels = rest.split(|b| *b == b'.');
                let service = labels.next().unwrap_or(b"");
                let region = labels.next();
                (drop_dash_parts(service, 1).or(Some(service)), region)
            } else if strip_suffix_ci(host, b".cloudfunctions.net").is_some() {
                // `<region>-<project>`: regions are `<area>-<place><digit>`.
                let region = first
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'-')
                    .nth(1)
                    .map(|(i, _)| &first[..i]);
                (path_segment(path, 0).or(Some(first)), region)
            } else if strip_suffix_ci(host, b".azurewebsites.net").is_some() {
                let function = path_segment(path, 0)
                    .filter(|s| s.eq_ignore_ascii_case(b"api"))
                    .and_then(|_| path_segment(path, 1));
                (function.or(Some(first)), None)
            } else {
                (Some(first), None)
            };
        Self {
            rule: rule as u16,
            name: name.and_then(Short::new),
            region: region.and_then(Short::new),
        }
    }

    /// The derived `faas.invoked_name`.
    pub fn name(&self) -> Option<&[u8]> {
        self.name.as_ref().map(Short::get)
    }

    /// The derived `faas.invoked_region`.
    pub fn region(&self) -> Option<&[u8]> {
        self.region.as_ref().map(Short::get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::mesh::{EndFacts, RequestFacts};
    use crate::test_support::str_attr as s;

    fn rules(json: &str) -> Result<Upstreams, String> {
        let r: Vec<UpstreamRule> = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Upstreams::compile(&r).map_err(|e| e.to_string())
    }

    fn headers<'a>(host: &'a str, path: &'a str) -> RequestHeaders<'a> {
        RequestHeaders::from_pairs([
            (&b":authority"[..], host.as_bytes()),
            (&b":path"[..], path.as_bytes()),
        ])
    }

    const RULES: &str = r#"[
        {"match": {"cluster": "*.internal.example"}, "provider": "aws", "region": "eu-west-1", "name": "billing"},
        {"match": {"cluster": "*.a.run.app"}, "provider": "gcp"},
        {"match": {"host": "*.run.app"}, "provider": "gcp", "region": "us-central1"},
        {"match": {"host": "*.cloudfunctions.net"}, "provider": "gcp"},
        {"match": {"host": "*.azurewebsites.net"}, "provider": "azure", "region": "westeurope"},
        {"match": {"host": "orders.example.com"}, "provider": "acme", "name": "orders"}
    ]"#;

    fn derived(u: &Upstreams, host: &str, path: &str) -> (Option<String>, Option<String>) {
        let inv = u.for_request(&headers(host, path)).unwrap();
        let text = |v: Option<&[u8]>| v.map(|v| String::from_utf8(v.to_vec()).unwrap());
        (text(inv.name()), text(inv.region()))
    }

    #[test]
    fn names_and_regions_are_derived_per_platform() {
        let u = rules(RULES).unwrap();
        let some = |v: &str| Some(v.to_string());
        assert_eq!(
            derived(&u, "myfn-abc123-uc.a.run.app", "/"),
            (some("myfn"), None)
        );
        assert_eq!(
            derived(&u, "my-fn-abc123-uc.a.run.app:443", "/"),
            (some("my-fn"), None)
        );
        assert_eq!(
            derived(&u, "myfn-123456789.europe-west1.run.app", "/x"),
            (some("myfn"), some("europe-west1"))
        );
        assert_eq!(
            derived(
                &u,
                "us-central1-shop-prod.cloudfunctions.net",
                "/resize?x=1"
            ),
            (some("resize"), some("us-central1"))
        );
        assert_eq!(
            derived(&u, "MyApp.AzureWebsites.net", "/api/HttpTrigger1?code=k"),
            (some("HttpTrigger1"), None)
        );
        assert_eq!(
            derived(&u, "myapp.azurewebsites.net", "/health"),
            (some("myapp"), None)
        );
        assert_eq!(
            derived(&u, "orders.example.com", "/"),
            (some("orders"), None)
        );
        // Client-controlled text that is no name is left out, never sent on.
        let long = format!("/{}", "a".repeat(64));
        assert_eq!(derived(&u, "x.cloudfunctions.net", &long), (None, None));
        assert_eq!(
            derived(&u, "us-east1-p.cloudfunctions.net", "/f%C3%A9"),
            (None, some("us-east1"))
        );
        // No rule: nothing.
        assert!(u.for_request(&headers("example.org", "/")).is_none());
        assert!(u.for_request(&headers("run.app", "/")).is_none());
        assert!(u
            .for_cluster(b"outbound|80||orders.internal.example")
            .is_some());
        assert!(u.for_cluster(b"outbound|80||orders.example.org").is_none());
        // A cluster rule derives from the host in Istio's cluster name.
        let inv = u
            .for_cluster(b"outbound|443||svc-abc123-ue.a.run.app")
            .unwrap();
        assert_eq!(inv.name(), Some(&b"svc"[..]));
        assert_eq!(inv.region(), None);
    }

    #[test]
    fn the_injected_formats_follow_the_provider() {
        let u = rules(RULES).unwrap();
        let bits = |host: &str| u.inject_bits(&headers(host, "/"));
        assert_eq!(bits("myfn-abc123-uc.a.run.app"), Propagator::Gcp.bit());
        assert_eq!(bits("x.cloudfunctions.net:443"), Propagator::Gcp.bit());
        assert_eq!(
            bits("myapp.azurewebsites.net"),
            Propagator::TraceContext.bit()
        );
        assert_eq!(bits("orders.example.com"), 0);
        assert_eq!(bits("example.org"), 0);
        assert_eq!(
            Upstreams::default().inject_bits(&headers("a.run.app", "/")),
            0
        );
    }

    #[test]
    fn config_errors_name_the_field_and_value() {
        let err = |json: &str| rules(json).unwrap_err();
        assert_eq!(
            err(r#"[{"match": {}, "provider": "gcp"}]"#),
            "faas.upstreams[0].match: expected exactly one of host or cluster"
        );
        assert_eq!(
            err(r#"[{"match": {"host": "a", "cluster": "b"}, "provider": "gcp"}]"#),
            "faas.upstreams[0].match: expected exactly one of host or cluster"
        );
        assert_eq!(
            err(
                r#"[{"match": {"host": "*.run.app"}, "provider": "gcp"}, {"match": {"host": "a*b"}, "provider": "gcp"}]"#
            ),
            "faas.upstreams[1].match.host: only a leading `*` is allowed, got \"a*b\""
        );
        assert_eq!(
            err(r#"[{"match": {"cluster": "*"}, "provider": "gcp"}]"#),
            "faas.upstreams[0].match.cluster: must be a host or `*` followed by a suffix, got \"*\""
        );
        assert_eq!(
            err(r#"[{"match": {"host": "a"}, "provider": " "}]"#),
            "faas.upstreams[0].provider: must be a non-empty string, got \" \""
        );
        assert_eq!(
            err(r#"[{"match": {"host": "a"}, "provider": "gcp", "name": ""}]"#),
            "faas.upstreams[0].name: must be a non-empty string when set, got \"\""
        );
        let many = format!(
            "[{}]",
            vec![r#"{"match": {"host": "a"}, "provider": "gcp"}"#; MAX_RULES + 1].join(",")
        );
        assert_eq!(err(&many), "faas.upstreams: at most 64 rules, got 65");
        // Through the plugin loader, serde's errors name the path too.
        let load = |faas: &str| {
            let json = format!(r#"{{"collector": {{"cluster": "c"}}, "faas": {faas}}}"#);
            crate::config::load(json.as_bytes())
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            load(r#"{"upstreams": [{"match": {"host": "a*"}, "provider": "gcp"}]}"#),
            "faas.upstreams[0].match.host: only a leading `*` is allowed, got \"a*\""
        );
        let missing = load(r#"{"upstreams": [{"match": {"host": "a"}}]}"#);
        assert!(
            missing.starts_with("faas.upstreams[0]: missing field `provider`"),
            "{missing}"
        );
    }

    fn finished(
        u: &Upstreams,
        kind: SpanKind,
        invoked: Option<Invoked>,
        cluster: &[u8],
    ) -> SpanRecord {
        let mut rec = SpanRecord::default();
        u.finish(
            &mut rec,
            &Finish {
                kind,
                request: &RequestFacts {
                    invoked,
                    ..RequestFacts::default()
                },
                mesh: EndFacts {
                    cluster_name: Some(cluster),
                    ..EndFacts::default()
                },
                ..Finish::default()
            },
        );
        rec
    }

    #[test]
    fn client_spans_to_matched_upstreams_carry_the_invoked_function() {
        let u = rules(RULES).unwrap();
        let inv = u.for_request(&headers("myfn-abc123-uc.a.run.app", "/"));
        let rec = finished(
            &u,
            SpanKind::Client,
            inv,
            b"outbound|443||myfn-abc123-uc.a.run.app",
        );
        assert_eq!(s(&rec, "faas.invoked_name").as_deref(), Some("myfn"));
        assert_eq!(s(&rec, "faas.invoked_provider").as_deref(), Some("gcp"));
        assert_eq!(
            s(&rec, "faas.invoked_region").as_deref(),
            Some("us-central1")
        );
        // The configured name wins over the derived one; a cluster rule matches at the end.
        let rec = finished(
            &u,
            SpanKind::Client,
            None,
            b"outbound|80||pay.internal.example",
        );
        assert_eq!(s(&rec, "faas.invoked_name").as_deref(), Some("billing"));
        assert_eq!(s(&rec, "faas.invoked_provider").as_deref(), Some("aws"));
        assert_eq!(s(&rec, "faas.invoked_region").as_deref(), Some("eu-west-1"));
        // Server spans and unmatched upstreams carry none.
        let rec = finished(&u, SpanKind::Server, inv, b"inbound|8080||");
        assert_eq!(rec.get("faas.invoked_provider"), None);
        let rec = finished(&u, SpanKind::Client, None, b"outbound|80||a.example.org");
        assert_eq!(rec.get("faas.invoked_provider"), None);
    }
}
