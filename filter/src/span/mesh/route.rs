//! `http.route` and the span name: low-cardinality templates, never the raw path.
//!
//! A path matching a configured template (`/api/users/{id}`) takes that template; any other
//! path is templated here by replacing segments that are clearly identifiers (all digits, a
//! UUID, a long hex string, a long generated token) with `{id}`, so `/orders/8812/items` and
//! `/orders/9001/items` name the same span. Words stay: `/users/alice` is not templated, and
//! [`crate::span::name`] bounds how many such names a VM hands out.

use serde::Deserialize;
use smallvec::SmallVec;

use crate::error::ConfigError;

/// The span-name style (`span_name` in the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SpanNameStyle {
    /// `{method} {http.route}`, as the HTTP semantic conventions name server spans.
    #[default]
    Semconv,
    /// `HTTP {METHOD} {ROUTE}`, the form older dashboards were built on.
    Legacy,
    /// `{method} {http.route}` for configured `routes` only, `{method}` for every other path:
    /// no name is guessed from a path (see [`crate::span::name`]).
    Strict,
}

/// One segment of a compiled template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<[u8]>),
    /// `{name}`: exactly one non-empty path segment.
    Param,
}

/// A configured route template, compiled once per VM.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Template {
    text: Box<[u8]>,
    segments: Box<[Segment]>,
}

/// The configured templates, tried in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    templates: Vec<Template>,
}

/// Route text is built on the stack for ordinary paths.
pub type RouteBuf = SmallVec<[u8; 192]>;

impl Routes {
    /// Compiles `routes` from the configuration; errors name the entry (`routes[2]`).
    pub fn compile(templates: &[String]) -> Result<Self, ConfigError> {
        let mut out = Vec::with_capacity(templates.len());
        for (i, t) in templates.iter().enumerate() {
            let field = format!("routes[{i}]");
            let Some(rest) = t.strip_prefix('/') else {
                return Err(ConfigError::new(
                    &field,
                    format!("expected a path starting with '/', got {t:?}"),
                ));
            };
            let mut segments = Vec::new();
            for seg in rest.split('/') {
                if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    if name.is_empty() || name.contains(['{', '}']) {
                        return Err(ConfigError::new(
                            &field,
                            format!("expected a parameter name inside {{}}, got {seg:?} in {t:?}"),
                        ));
                    }
                    segments.push(Segment::Param);
                } else if seg.contains(['{', '}']) {
                    return Err(ConfigError::new(
                        &field,
                        format!(
                            "a parameter must be a whole segment like {{id}}, got {seg:?} in {t:?}"
                        ),
                    ));
                } else {
                    segments.push(Segment::Literal(seg.as_bytes().into()));
                }
            }
            out.push(Template {
                text: t.as_bytes().into(),
                segments: segments.into(),
            });
        }
        Ok(Self { templates: out })
    }

    /// The first configured template matching `path` (without its query).
    pub fn matching(&self, path: &[u8]) -> Option<&[u8]> {
        self.matching_index(path).map(|i| &*self.templates[i].text)
    }

    /// The configured templates, in order.
    pub fn templates(&self) -> impl Iterator<Item = &[u8]> {
        self.templates.iter().map(|t| &*t.text)
    }

    /// The index of the first configured template matching `path` (without its query).
    pub fn matching_index(&self, path: &[u8]) -> Option<usize> {
        let rest = path.strip_prefix(b"/")?;
        self.templates.iter().position(|t| {
            let mut segs = rest.split(|&b| b == b'/');
            t.segments.iter().all(|s| match (s, segs.next()) {
                (Segment::Literal(l), Some(p)) => **l == *p,
                (Segment::Param, Some(p)) => !p.is_empty(),
                (_, None) => false,
            }) && segs.next().is_none()
        })
    }

    /// `http.route` for `path` into `out`: a configured template (the result is `true`), else
    /// the templated path (`false`: a guess, which [`crate::span::name`] bounds).
    pub fn route(&self, path: &[u8], out: &mut RouteBuf) -> bool {
        out.clear();
        match self.matching(path) {
            Some(t) => {
                out.extend_from_slice(t);
                true
            }
            None => {
                template_path(path, out);
                false
            }
        }
    }
}

impl Routes {
    /// `http.route` for `path`, written into `out` (cleared first) as valid UTF-8 of at most
    /// `room` bytes: what [`Routes::route`] then [`crate::text::append`] with cap `room` give,
    /// without the intermediate buffer. `Some(true)` for a configured template, `Some(false)`
    /// for the templated path, `None` (and `out` empty) when no template matches and
    /// `template` is off (`span_name: strict` names no guessed route). No allocation when `out`
    /// has room for `room` bytes.
    pub fn route_capped(
        &self,
        path: &[u8],
        template: bool,
        room: usize,
        out: &mut Vec<u8>,
    ) -> Option<bool> {
        out.clear();
        if let Some(t) = self.matching(path) {
            crate::text::append(t, room, out);
            return Some(true);
        }
        if !template {
            return None;
        }
        template_capped(path, room, out);
        Some(false)
    }
}

/// [`template_path`] then [`crate::text::append`] with cap `room`, into `out` (cleared first).
///
/// Hand-written because it runs on every recorded request: an ASCII path (nearly all of them)
/// is templated into `out` directly, copying each run between identifiers in one move, and an
/// ASCII result is valid UTF-8 that may be cut at any byte, so capping is a length check.
/// Any other path takes the general route through a separate buffer.
fn template_capped(path: &[u8], room: usize, out: &mut Vec<u8>) {
    out.clear();
    if path.is_empty() || !path.is_ascii() {
        let mut buf = RouteBuf::new();
        template_path(path, &mut buf);
        crate::text::append(&buf, room, out);
        return;
    }
    // `path[..done]` has been written (templated) to `out`.
    let mut done = 0;
    let mut start = 0;
    loop {
        let end = crate::text::find_byte(&path[start..], b'/').map_or(path.len(), |i| start + i);
        let seg = &path[start..end];
        // Most segments are short words, decided by their first byte without a call.
        let id = match seg.len() {
            0 => false,
            n if n < MIN_HEX_ID.min(MIN_TOKEN_ID) => seg.iter().all(u8::is_ascii_digit),
            _ => is_identifier(seg),
        };
        if id {
            if !push_capped(&path[done..start], room, out) || !push_capped(b"{id}", room, out) {
                return;
            }
            done = end;
        }
        if end == path.len() {
            break;
        }
        start = end + 1;
    }
    push_capped(&path[done..], room, out);
}

/// Appends as much of ASCII `s` as fits `out` within `room` bytes; `false` when it was cut.
#[inline]
fn push_capped(s: &[u8], room: usize, out: &mut Vec<u8>) -> bool {
    let n = s.len().min(room.saturating_sub(out.len()));
    crate::copy::append(&s[..n], out);
    n == s.len()
}

/// Replaces identifier-like segments of `path` with `{id}`.
pub fn template_path(path: &[u8], out: &mut RouteBuf) {
    out.clear();
    if path.is_empty() {
        out.push(b'/');
        return;
    }
    for (i, seg) in path.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        if is_identifier(seg) {
            out.extend_from_slice(b"{id}");
        } else {
            out.extend_from_slice(seg);
        }
    }
}

/// Shortest run of hex digits treated as an identifier (a 64-bit id printed in hex).
const MIN_HEX_ID: usize = 16;

/// Shortest generated token (base64url, base62, ULID, nanoid) treated as an identifier.
const MIN_TOKEN_ID: usize = 20;

/// All digits, a UUID, a long hex string, or a long generated token.
fn is_identifier(seg: &[u8]) -> bool {
    if seg.is_empty() {
        return false;
    }
    if seg.iter().all(u8::is_ascii_digit) {
        return true;
    }
    // Every other kind of identifier is longer: a short word is decided here.
    if seg.len() < MIN_HEX_ID.min(MIN_TOKEN_ID) {
        return false;
    }
    if is_uuid(seg) {
        return true;
    }
    if seg.len() >= MIN_HEX_ID && seg.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    is_generated_token(seg)
}

/// A long run of base64url characters with a digit and an upper-case letter: what encoders of
/// random ids write (`01ARZ3NDEKTSV4RRFFQ69G5FAV`, `V1StGXR8_Z5jdHi6B-myT`, base64 of a key).
/// Route words and slugs are lower case, and a `.` marks a file name, so neither matches.
fn is_generated_token(seg: &[u8]) -> bool {
    seg.len() >= MIN_TOKEN_ID
        && seg
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        && seg.iter().any(u8::is_ascii_digit)
        && seg.iter().any(u8::is_ascii_uppercase)
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(r: &Routes, path: &str) -> String {
        let mut out = RouteBuf::new();
        r.route(path.as_bytes(), &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn templater_replaces_identifiers() {
        let r = Routes::default();
        assert_eq!(route(&r, "/api/users/12345"), "/api/users/{id}");
        assert_eq!(
            route(&r, "/orders/550e8400-e29b-41d4-a716-446655440000/items"),
            "/orders/{id}/items"
        );
        assert_eq!(
            route(&r, "/blobs/4bf92f3577b34da6a3ce929d0e0e4736"),
            "/blobs/{id}"
        );
        assert_eq!(
            route(&r, "/v2/reviews/0/ratings"),
            "/v2/reviews/{id}/ratings"
        );
        assert_eq!(
            route(&r, "/sessions/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
            "/sessions/{id}"
        );
        assert_eq!(route(&r, "/s/V1StGXR8_Z5jdHi6B-myT/x"), "/s/{id}/x");
        // Words, slugs, file names, short hex and versions stay: they are the route, not an id.
        assert_eq!(
            route(&r, "/blog/kubernetes-1-28-release-notes"),
            "/blog/kubernetes-1-28-release-notes"
        );
        assert_eq!(
            route(&r, "/static/App-Bundle-2024-min.js"),
            "/static/App-Bundle-2024-min.js"
        );
        assert_eq!(route(&r, "/users/alice"), "/users/alice");
        assert_eq!(route(&r, "/api/v1/cafe/beef"), "/api/v1/cafe/beef");
        assert_eq!(route(&r, "/static/app.js"), "/static/app.js");
        assert_eq!(route(&r, "/"), "/");
        assert_eq!(route(&r, ""), "/");
        assert_eq!(route(&r, "/a//1/"), "/a//{id}/");
    }

    #[test]
    fn configured_templates_win_in_order() {
        let r = Routes::compile(&[
            "/api/users/{id}".into(),
            "/api/users/{id}/orders/{order}".into(),
            "/api/{section}/list".into(),
        ])
        .unwrap();
        assert_eq!(route(&r, "/api/users/alice"), "/api/users/{id}");
        assert_eq!(
            route(&r, "/api/users/alice/orders/77"),
            "/api/users/{id}/orders/{order}"
        );
        assert_eq!(route(&r, "/api/books/list"), "/api/{section}/list");
        // No template matches: the templater takes over.
        assert_eq!(route(&r, "/api/users/alice/x"), "/api/users/alice/x");
        assert_eq!(route(&r, "/api/users/"), "/api/users/");
        assert_eq!(
            route(&r, "/api/users/42/carts/9"),
            "/api/users/{id}/carts/{id}"
        );
        assert_eq!(r.matching(b"no-slash"), None);
    }

    #[test]
    fn template_errors_name_the_entry() {
        let e = Routes::compile(&["/ok".into(), "api/x".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "routes[1]: expected a path starting with '/', got \"api/x\""
        );
        let e = Routes::compile(&["/a/{}".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "routes[0]: expected a parameter name inside {}, got \"{}\" in \"/a/{}\""
        );
        let e = Routes::compile(&["/a/x{id}".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "routes[0]: a parameter must be a whole segment like {id}, got \"x{id}\" in \"/a/x{id}\""
        );
    }
    proptest::proptest! {
        /// The direct templater caps and validates exactly as templating into a buffer and
        /// appending that with the cap does.
        #[test]
        fn capped_templating_is_templating_then_appending(
            path in proptest::collection::vec(
                proptest::prop_oneof![
                    6 => proptest::sample::select(&b"/abcAZ09-_.f"[..]),
                    1 => proptest::prelude::any::<u8>(),
                ],
                0..120,
            ),
            room in 0usize..140,
        ) {
            let mut got = Vec::new();
            template_capped(&path, room, &mut got);
            let mut buf = RouteBuf::new();
            template_path(&path, &mut buf);
            let mut want = Vec::new();
            crate::text::append(&buf, room, &mut want);
            proptest::prop_assert_eq!(got, want);
        }
    }
}
