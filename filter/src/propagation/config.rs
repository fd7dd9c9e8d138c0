//! `propagators` and `baggage` in the configuration: which formats are read and written, how far
//! incoming contexts are trusted, and which baggage keys become attributes.

use serde::Deserialize;
use smallvec::SmallVec;

use super::context::Trust;
use super::Propagator;
use crate::error::ConfigError;

/// Which trace-context formats are read and written, and how far incoming contexts are trusted.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct Propagators {
    /// Formats tried in order on the way in; the first that yields a valid context wins.
    pub extract: Vec<String>,
    /// Formats always written upstream, besides the one the request arrived with.
    pub inject: Vec<String>,
    /// Continue incoming contexts. False at an internet-facing edge: each request starts a new
    /// trace and the incoming context becomes a span link, so clients cannot force sampling.
    pub trust_incoming: bool,
    /// Honour Linkerd 1's `l5d-sample` rate as a sampling override.
    pub trust_l5d_sample: bool,
}
crate::config::section::object_section!(Propagators);

impl Default for Propagators {
    fn default() -> Self {
        let names = |f: &[Propagator]| f.iter().map(|f| f.name().to_string()).collect();
        Self {
            extract: names(&Propagator::CONTEXTS),
            inject: names(&[Propagator::TraceContext, Propagator::Baggage]),
            trust_incoming: true,
            trust_l5d_sample: false,
        }
    }
}

/// The format names a list may use, for error messages.
fn format_names(context_only: bool) -> String {
    Propagator::ALL
        .iter()
        .filter(|f| !context_only || f.carries_context())
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resolves a list of format names, refusing unknown names and repeats; `context_only` also
/// refuses `baggage`, which carries no trace context to extract.
pub(crate) fn resolve_formats(
    field: &str,
    names: &[String],
    context_only: bool,
) -> Result<SmallVec<[Propagator; 8]>, ConfigError> {
    let mut out = SmallVec::new();
    for (i, name) in names.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let format = Propagator::from_name(name).ok_or_else(|| {
            ConfigError::new(
                &at,
                format!(
                    "unknown format {name:?}; expected one of {}",
                    format_names(context_only)
                ),
            )
        })?;
        if context_only && !format.carries_context() {
            return Err(ConfigError::new(
                &at,
                format!(
                    "{name:?} carries no trace context to extract; expected one of {}",
                    format_names(true)
                ),
            ));
        }
        if out.contains(&format) {
            return Err(ConfigError::new(
                &at,
                format!("format {name:?} is listed twice"),
            ));
        }
        out.push(format);
    }
    Ok(out)
}

impl Propagators {
    /// Resolves the format lists, refusing unknown names and repeats, so requests only test
    /// bits.
    pub fn compile(&self) -> Result<Propagation, ConfigError> {
        let extract = resolve_formats("propagators.extract", &self.extract, true)?;
        let inject = resolve_formats("propagators.inject", &self.inject, false)?;
        let mask = |formats: &[Propagator]| formats.iter().fold(0u16, |m, f| m | f.bit());
        let inject_mask = mask(&inject);
        Ok(Propagation {
            known: inject_mask | mask(&extract),
            inject: inject_mask,
            extract,
            trust: Trust {
                incoming: self.trust_incoming,
                l5d_sample: self.trust_l5d_sample,
            },
        })
    }
}

/// `propagators`, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Propagation {
    /// The extraction order; the first format that yields a valid context wins.
    pub extract: SmallVec<[Propagator; 8]>,
    /// Formats always injected (a bit per [`Propagator::bit`]).
    pub inject: u16,
    /// Formats the configuration names at all; only their stale headers are removed.
    pub known: u16,
    /// How far incoming contexts are trusted.
    pub trust: Trust,
}

/// What may be read from W3C baggage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct BaggageConfig {
    /// Baggage keys copied into span attributes as `baggage.<key>`; nothing else is, because
    /// baggage is set by callers and may carry what must not reach a trace backend.
    pub attribute_keys: Vec<String>,
}
crate::config::section::object_section!(BaggageConfig);

impl BaggageConfig {
    /// Checks that every key is an HTTP token.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, key) in self.attribute_keys.iter().enumerate() {
            let token = !key.is_empty()
                && key.len() <= crate::limits::MAX_CONFIGURED_KEY_BYTES
                && key
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c));
            if !token {
                return Err(ConfigError::new(
                    &format!("baggage.attribute_keys[{i}]"),
                    format!(
                        "{key:?} is not a valid baggage key (an HTTP token such as \"tenant_id\")"
                    ),
                ));
            }
        }
        Ok(())
    }
}
