//! Canary and A/B tags: ordered rules that name the release a request went to and the group it
//! belongs to, and the configured weight of the subset that served it.
//!
//! Rules are tried in order and each tag (`mesh.release`, `mesh.canary`, `mesh.ab_group`) is
//! taken from the first matching rule that sets it, so one rule can name the release by subset
//! while a later one names the A/B group by header. Header and cookie rules are decided when the
//! request arrives (its headers are gone by the end); subset and route rules at the end, once
//! Envoy has picked the cluster.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::ConfigError;
use crate::span::SpanRecord;

/// `traffic` in the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct TrafficConfig {
    /// The rules, tried in order; every matching rule contributes its tags.
    pub rules: Vec<RuleConfig>,
    /// Subset name → configured weight (e.g. the VirtualService split), for `mesh.traffic.weight`.
    pub weights: BTreeMap<String, u32>,
}
crate::config::section::object_section!(TrafficConfig);

/// One rule as written: `{"match": "header", "name": "x-group", "value": "b", "ab_group": "B"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct RuleConfig {
    /// `subset`, `header`, `cookie` or `route`.
    #[serde(rename = "match")]
    pub kind: String,
    /// The header or cookie name (header and cookie rules only).
    #[serde(default)]
    pub name: Option<String>,
    /// The value to compare; a header or cookie rule without one matches on presence.
    #[serde(default)]
    pub value: Option<String>,
    /// `mesh.release` set by a match.
    #[serde(default)]
    pub release: Option<String>,
    /// `mesh.canary` set by a match.
    #[serde(default)]
    pub canary: Option<bool>,
    /// `mesh.ab_group` set by a match.
    #[serde(default)]
    pub ab_group: Option<String>,
}
crate::config::section::object_section!(RuleConfig);

/// What a compiled rule looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Matcher {
    Subset(Box<[u8]>),
    /// Lowercase header name, optional exact value.
    Header(Box<[u8]>, Option<Box<[u8]>>),
    Cookie(Box<[u8]>, Option<Box<[u8]>>),
    Route(Box<[u8]>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    matcher: Matcher,
    release: Option<Box<[u8]>>,
    canary: Option<bool>,
    ab_group: Option<Box<[u8]>>,
}

impl Rule {
    /// Whether rule `i` matches: by the request-time `hits`, or by subset or route name.
    fn hit(
        &self,
        i: usize,
        hits: RuleHits,
        subset: Option<&[u8]>,
        route_name: Option<&[u8]>,
    ) -> bool {
        match &self.matcher {
            Matcher::Subset(s) => subset.is_some_and(|x| x == &**s),
            Matcher::Route(n) => route_name.is_some_and(|x| x == &**n),
            Matcher::Header(..) | Matcher::Cookie(..) => hits.0 & (1 << i) != 0,
        }
    }
}

/// Rules fit one bitmask of per-request hits.
pub const MAX_RULES: usize = 64;

/// Compiled traffic rules and weights, built once per VM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    rules: Vec<Rule>,
    weights: Vec<(Box<[u8]>, u32)>,
    /// Whether any rule needs the request's headers (so the unconfigured path skips the scan).
    request_rules: bool,
}

/// Bit `i` set: request-time rule `i` matched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleHits(pub u64);

impl Traffic {
    /// The rules of `c`, with names lowercased and values checked.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the rule (`traffic.rules[i].field`) and its value.
    pub fn compile(c: &TrafficConfig) -> Result<Self, ConfigError> {
        if c.rules.len() > MAX_RULES {
            return Err(ConfigError::new(
                "traffic.rules",
                format!("at most {MAX_RULES} rules, got {}", c.rules.len()),
            ));
        }
        let mut rules = Vec::with_capacity(c.rules.len());
        for (i, r) in c.rules.iter().enumerate() {
            let field = |f: &str| format!("traffic.rules[{i}].{f}");
            // Header names compare case-insensitively; cookie names are case-sensitive.
            let need_name = |lowercase: bool| -> Result<Box<[u8]>, ConfigError> {
                match r.name.as_deref().map(str::trim) {
                    Some(n) if !n.is_empty() && lowercase => {
                        Ok(n.to_ascii_lowercase().into_bytes().into())
                    }
                    Some(n) if !n.is_empty() => Ok(n.as_bytes().into()),
                    _ => Err(ConfigError::new(
                        &field("name"),
                        format!("required for a {} rule", r.kind),
                    )),
                }
            };
            let need_value = || -> Result<Box<[u8]>, ConfigError> {
                match r.value.as_deref() {
                    Some(v) if !v.is_empty() => Ok(v.as_bytes().into()),
                    _ => Err(ConfigError::new(
                        &field("value"),
                        format!("required for a {} rule", r.kind),
                    )),
                }
            };
            let no_name = || -> Result<(), ConfigError> {
                match &r.name {
                    Some(n) => Err(ConfigError::new(
                        &field("name"),
                        format!("not used by a {} rule, got {n:?}", r.kind),
                    )),
                    None => Ok(()),
                }
            };
            let optional = |v: &Option<String>| v.as_ref().map(|v| v.as_bytes().into());
            let matcher = match r.kind.as_str() {
                "subset" => {
                    no_name()?;
                    Matcher::Subset(need_value()?)
                }
                "route" => {
                    no_name()?;
                    Matcher::Route(need_value()?)
                }
                "header" => Matcher::Header(need_name(true)?, optional(&r.value)),
                "cookie" => Matcher::Cookie(need_name(false)?, optional(&r.value)),
                other => {
                    return Err(ConfigError::new(
                        &field("match"),
                        format!("expected one of subset, header, cookie, route, got {other:?}"),
                    ))
                }
            };
            if r.release.is_none() && r.canary.is_none() && r.ab_group.is_none() {
                return Err(ConfigError::new(
                    &format!("traffic.rules[{i}]"),
                    "sets nothing: give at least one of release, canary, ab_group",
                ));
            }
            for (f, v) in [("release", &r.release), ("ab_group", &r.ab_group)] {
                if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                    return Err(ConfigError::new(
                        &field(f),
                        "must be a non-empty string when set",
                    ));
                }
            }
            rules.push(Rule {
                matcher,
                release: optional(&r.release),
                canary: r.canary,
                ab_group: optional(&r.ab_group),
            });
        }
        let mut weights = Vec::with_capacity(c.weights.len());
        for (subset, w) in &c.weights {
            if subset.is_empty() {
                return Err(ConfigError::new(
                    "traffic.weights",
                    "subset names must be non-empty",
                ));
            }
            weights.push((subset.as_bytes().into(), *w));
        }
        let request_rules = rules
            .iter()
            .any(|r| matches!(r.matcher, Matcher::Header(..) | Matcher::Cookie(..)));
        Ok(Self {
            rules,
            weights,
            request_rules,
        })
    }

    /// Whether [`Traffic::request_hits`] can find anything (so callers can skip the header scan).
    pub fn has_request_rules(&self) -> bool {
        self.request_rules
    }

    /// Evaluates header and cookie rules against the request's headers (`cookie` is the
    /// request's `cookie` header).
    pub fn request_hits<'h>(
        &self,
        headers: impl Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
        cookie: Option<&[u8]>,
    ) -> RuleHits {
        let mut hits = 0u64;
        for (i, r) in self.rules.iter().enumerate() {
            let hit = match &r.matcher {
                Matcher::Header(name, value) => headers.clone().any(|(k, v)| {
                    k.eq_ignore_ascii_case(name) && value.as_deref().is_none_or(|want| v == want)
                }),
                Matcher::Cookie(name, value) => cookie
                    .and_then(|c| cookie_value(c, name))
                    .is_some_and(|v| value.as_deref().is_none_or(|want| v == want)),
                _ => false,
            };
            if hit {
                hits |= 1 << i;
            }
        }
        RuleHits(hits)
    }

    /// Writes `mesh.release`, `mesh.canary`, `mesh.ab_group` and `mesh.traffic.weight` from the
    /// request-time hits and the end-of-request subset and route name.
    pub fn record(
        &self,
        hits: RuleHits,
        subset: Option<&[u8]>,
        route_name: Option<&[u8]>,
        rec: &mut SpanRecord,
    ) {
        let mut release: Option<&[u8]> = None;
        let mut canary: Option<bool> = None;
        let mut ab_group: Option<&[u8]> = None;
        for (i, r) in self.rules.iter().enumerate() {
            if !r.hit(i, hits, subset, route_name) {
                continue;
            }
            release = release.or(r.release.as_deref());
            canary = canary.or(r.canary);
            ab_group = ab_group.or(r.ab_group.as_deref());
        }
        if let Some(v) = release {
            rec.str("mesh.release", v);
        }
        if let Some(v) = canary {
            rec.bool("mesh.canary", v);
        }
        if let Some(v) = ab_group {
            rec.str("mesh.ab_group", v);
        }
        if let Some(w) = subset.and_then(|s| self.weight(s)) {
            rec.int("mesh.traffic.weight", i64::from(w));
        }
    }

    /// The index of the first rule that matches and sets a release: the `mesh.release` that
    /// [`Traffic::record`] writes is [`Traffic::rule_release`] of it.
    pub fn release_rule(
        &self,
        hits: RuleHits,
        subset: Option<&[u8]>,
        route_name: Option<&[u8]>,
    ) -> Option<usize> {
        self.rules
            .iter()
            .enumerate()
            .position(|(i, r)| r.release.is_some() && r.hit(i, hits, subset, route_name))
    }

    /// The release rule `i` sets, if any.
    pub fn rule_release(&self, i: usize) -> Option<&[u8]> {
        self.rules.get(i)?.release.as_deref()
    }

    /// How many rules there are.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Whether a rule needs the subset (the cluster name) at the end of the request.
    pub fn has_subset_rules(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.matcher, Matcher::Subset(..)))
    }

    /// Whether a rule needs the route name at the end of the request.
    pub fn has_route_rules(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.matcher, Matcher::Route(..)))
    }

    /// The configured weight of `subset`.
    pub fn weight(&self, subset: &[u8]) -> Option<u32> {
        self.weights
            .iter()
            .find(|(s, _)| **s == *subset)
            .map(|(_, w)| *w)
    }
}

/// The value of cookie `name` in a `cookie` header (`a=1; b=2`).
pub fn cookie_value<'c>(header: &'c [u8], name: &[u8]) -> Option<&'c [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name).then(|| {
            let v = pair[eq + 1..].trim_ascii();
            // RFC 6265 allows a quoted value.
            v.strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Value;

    fn traffic(json: &str) -> Result<Traffic, String> {
        let c: TrafficConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Traffic::compile(&c).map_err(|e| e.to_string())
    }

    use crate::test_support::str_attr as s;

    const CONFIG: &str = r#"{
        "rules": [
            {"match": "subset", "value": "v2", "release": "canary", "canary": true},
            {"match": "subset", "value": "v1", "release": "stable", "canary": false},
            {"match": "header", "name": "X-AB-Group", "value": "b", "ab_group": "B"},
            {"match": "cookie", "name": "exp", "value": "new-checkout", "ab_group": "checkout-new"},
            {"match": "header", "name": "x-canary", "release": "canary", "canary": true},
            {"match": "route", "value": "reviews-mirror", "release": "mirror"},
            {"match": "header", "name": "x-ab-group", "ab_group": "A"}
        ],
        "weights": {"v1": 90, "v2": 10}
    }"#;

    #[test]
    fn subset_rules_and_weights() {
        let t = traffic(CONFIG).unwrap();
        let mut rec = SpanRecord::default();
        t.record(RuleHits::default(), Some(b"v2"), None, &mut rec);
        assert_eq!(s(&rec, "mesh.release").as_deref(), Some("canary"));
        assert_eq!(rec.get("mesh.canary"), Some(&Value::Bool(true)));
        assert_eq!(rec.get("mesh.ab_group"), None);
        assert_eq!(rec.get("mesh.traffic.weight"), Some(&Value::Int(10)));
        let mut rec = SpanRecord::default();
        t.record(RuleHits::default(), Some(b"v1"), None, &mut rec);
        assert_eq!(s(&rec, "mesh.release").as_deref(), Some("stable"));
        assert_eq!(rec.get("mesh.canary"), Some(&Value::Bool(false)));
        assert_eq!(rec.get("mesh.traffic.weight"), Some(&Value::Int(90)));
        let mut rec = SpanRecord::default();
        t.record(RuleHits::default(), Some(b"v3"), None, &mut rec);
        assert!(rec.attrs.is_empty());
    }

    #[test]
    fn header_and_cookie_rules_first_setter_wins() {
        let t = traffic(CONFIG).unwrap();
        assert!(t.has_request_rules());
        let pairs: [(&[u8], &[u8]); 2] = [(b"x-ab-group", b"b"), (b"x-canary", b"1")];
        let hits = t.request_hits(pairs.iter().copied(), None);
        assert_eq!(hits, RuleHits((1 << 2) | (1 << 4) | (1 << 6)));
        let mut rec = SpanRecord::default();
        t.record(hits, Some(b"v1"), None, &mut rec);
        // The subset rule comes first, so it names the release; the header's `B` beats the
        // later presence-only rule's `A`.
        assert_eq!(s(&rec, "mesh.release").as_deref(), Some("stable"));
        assert_eq!(rec.get("mesh.canary"), Some(&Value::Bool(false)));
        assert_eq!(s(&rec, "mesh.ab_group").as_deref(), Some("B"));
        // Another value: only the presence rule matches.
        let pairs: [(&[u8], &[u8]); 1] = [(b"X-AB-GROUP", b"z")];
        let hits = t.request_hits(pairs.iter().copied(), None);
        let mut rec = SpanRecord::default();
        t.record(hits, None, None, &mut rec);
        assert_eq!(s(&rec, "mesh.ab_group").as_deref(), Some("A"));
        // A cookie.
        let hits = t.request_hits(
            core::iter::empty(),
            Some(b"session=abc; exp=\"new-checkout\""),
        );
        assert_eq!(hits, RuleHits(1 << 3));
        let mut rec = SpanRecord::default();
        t.record(hits, None, Some(b"reviews-mirror"), &mut rec);
        assert_eq!(s(&rec, "mesh.ab_group").as_deref(), Some("checkout-new"));
        assert_eq!(s(&rec, "mesh.release").as_deref(), Some("mirror"));
    }

    #[test]
    fn cookie_parsing() {
        assert_eq!(cookie_value(b"a=1; b=2", b"b"), Some(&b"2"[..]));
        assert_eq!(cookie_value(b"a=1;b= 2 ", b"b"), Some(&b"2"[..]));
        assert_eq!(cookie_value(b"ab=1", b"a"), None);
        assert_eq!(cookie_value(b"a", b"a"), None);
        assert_eq!(cookie_value(b"", b"a"), None);
        assert_eq!(cookie_value(b"A=1", b"a"), None);
        assert_eq!(cookie_value(b"a=", b"a"), Some(&b""[..]));
    }

    #[test]
    fn no_config_is_empty_and_cheap() {
        let t = Traffic::compile(&TrafficConfig::default()).unwrap();
        assert!(!t.has_request_rules());
        let mut rec = SpanRecord::default();
        t.record(RuleHits(0), Some(b"v1"), Some(b"r"), &mut rec);
        assert!(rec.attrs.is_empty());
    }

    #[test]
    fn errors_name_the_rule_and_field() {
        assert_eq!(
            traffic(r#"{"rules":[{"match":"subset","value":"v1","release":"a"},{"match":"query","value":"x","release":"a"}]}"#)
                .unwrap_err(),
            "traffic.rules[1].match: expected one of subset, header, cookie, route, got \"query\""
        );
        assert_eq!(
            traffic(r#"{"rules":[{"match":"header","release":"a"}]}"#).unwrap_err(),
            "traffic.rules[0].name: required for a header rule"
        );
        assert_eq!(
            traffic(r#"{"rules":[{"match":"subset","release":"a"}]}"#).unwrap_err(),
            "traffic.rules[0].value: required for a subset rule"
        );
        assert_eq!(
            traffic(r#"{"rules":[{"match":"route","name":"x","value":"r","release":"a"}]}"#)
                .unwrap_err(),
            "traffic.rules[0].name: not used by a route rule, got \"x\""
        );
        assert_eq!(
            traffic(r#"{"rules":[{"match":"subset","value":"v1"}]}"#).unwrap_err(),
            "traffic.rules[0]: sets nothing: give at least one of release, canary, ab_group"
        );
        assert_eq!(
            traffic(r#"{"rules":[{"match":"subset","value":"v1","release":" "}]}"#).unwrap_err(),
            "traffic.rules[0].release: must be a non-empty string when set"
        );
        assert_eq!(
            traffic(r#"{"weights":{"":5}}"#).unwrap_err(),
            "traffic.weights: subset names must be non-empty"
        );
        let many = format!(
            r#"{{"rules":[{}]}}"#,
            vec![r#"{"match":"subset","value":"v","release":"r"}"#; 65].join(",")
        );
        assert_eq!(
            traffic(&many).unwrap_err(),
            "traffic.rules: at most 64 rules, got 65"
        );
    }
}
