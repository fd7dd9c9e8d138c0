//! The span name and `http.route`, decided together: bounded in length and in cardinality.
//!
//! The HTTP semantic conventions name a span `{method} {target}`, where the target is a
//! low-cardinality route template (`http.route`, or `url.template` on a client span), and plain
//! `{method}` when no such target is known; an unknown method is `HTTP`. They also say the name
//! MUST NOT default to the URI path. A proxy rarely knows the route, so the target comes from,
//! in order:
//!
//! 1. a configured `routes` template matching the path: always used, since the configuration
//!    bounds how many there are;
//! 2. otherwise the templater of [`crate::span::mesh::route`], which replaces segments that are
//!    clearly identifiers (numbers, UUIDs, long hex, long generated tokens) with `{id}`. Its
//!    output is only a guess at the route (`/users/alice` stays as it is), so each distinct name
//!    it yields is admitted into a per-VM set of at most `limits.max_span_names` names; once the
//!    set is full, a name not in it falls back to `{method}` with no `http.route`, and
//!    [`SpanNames::overflow`] counts how often (`meshtrace.span_names.overflow`).
//!
//! `span_name: strict` skips step 2: names are `{method} {template}` for configured templates
//! and `{method}` for everything else, as the conventions prescribe when no route is known.
//!
//! The name and `http.route` always agree: the route in the name is the attribute's value,
//! cut by the same cap, so that `{method} {route}` fits `limits.max_span_name_bytes` and the
//! route fits `limits.max_attribute_value_bytes`, both at a UTF-8 character boundary.

use crate::limits::cut_at_char_boundary;
use crate::span::mesh::route::SpanNameStyle;

/// What the request says about its route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// A configured `routes` template matched.
    Configured(&'a [u8]),
    /// The templater's guess from the path.
    Templated(&'a [u8]),
}

/// A span's name as parts to concatenate, and the `http.route` that goes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Named<'a> {
    /// The name's parts, concatenated in order (empty parts add nothing).
    pub parts: [&'a [u8]; 4],
    /// `http.route` (`url.template` on client spans), or `None` when the name is `{method}`.
    pub route: Option<&'a [u8]>,
}

impl Named<'_> {
    /// The whole name, for tests and logs.
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts.concat()
    }
}

/// The per-VM naming state: style, caps, and the names the templater has handed out.
#[derive(Clone, Debug)]
pub struct SpanNames {
    style: SpanNameStyle,
    max_name_bytes: usize,
    max_route_bytes: usize,
    seen: NameSet,
    /// Names that fell back to `{method}` because the set was full.
    overflow: u64,
}

impl Default for SpanNames {
    fn default() -> Self {
        Self::new(SpanNameStyle::default(), 256, 256, 1000, 0)
    }
}

/// `HTTP`: the name's method for a method the conventions do not know (`_OTHER`).
const OTHER_NAME: &[u8] = b"HTTP";
/// The method spelt in a legacy name when the conventions do not know it.
const OTHER_METHOD: &[u8] = b"_OTHER";

impl SpanNames {
    /// `max_name_bytes` caps the whole name, `max_route_bytes` the `http.route` value;
    /// `max_names` bounds the distinct templated names; `seed` keys the name hash, so names
    /// that collide cannot be chosen from outside.
    pub fn new(
        style: SpanNameStyle,
        max_name_bytes: u32,
        max_route_bytes: u32,
        max_names: u32,
        seed: u64,
    ) -> Self {
        Self {
            style,
            max_name_bytes: max_name_bytes as usize,
            max_route_bytes: max_route_bytes as usize,
            seen: NameSet::with_limit(max_names as usize, seed),
            overflow: 0,
        }
    }

    /// Names that fell back to `{method}` because the per-VM set of names was full.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// Distinct templated names admitted so far.
    pub fn distinct(&self) -> usize {
        self.seen.len
    }

    /// Names a request. `method` is the request's method and `known` whether the conventions
    /// know it (an unknown one never reaches the name: it is `HTTP`, or `_OTHER` in the legacy
    /// form). No allocation: the parts borrow `method`, `route` and constants.
    pub fn name<'a>(&mut self, method: &'a [u8], known: bool, route: Route<'a>) -> Named<'a> {
        let (target, limited) = match route {
            Route::Configured(t) => (Some(t), false),
            Route::Templated(_) if self.style == SpanNameStyle::Strict => (None, false),
            Route::Templated(t) => (Some(t), true),
        };
        let method_only = self.parts(method, known, None);
        let Some(target) = target else {
            return method_only;
        };
        // The name is the method-only name, a space and the target.
        let prefix = method_only.parts.iter().map(|p| p.len()).sum::<usize>() + 1;
        let room = self
            .max_name_bytes
            .saturating_sub(prefix)
            .min(self.max_route_bytes);
        let target = cut_at_char_boundary(target, room);
        if target.is_empty() {
            return method_only;
        }
        // Within one style the method's spelling and the target make the name.
        if limited && !self.admit(&[method_only.parts[0], method_only.parts[1], target]) {
            return method_only;
        }
        self.parts(method, known, Some(target))
    }

    /// Admits a name guessed from request data (made of `parts`, already capped) into the
    /// per-VM set. `false` when the set is full and the name is not in it: the caller names
    /// the span by its low-cardinality fallback, and [`SpanNames::overflow`] counts one more.
    /// Other name shapes guessed from a path (an RPC's `{service}/{method}`) go through here.
    pub fn admit(&mut self, parts: &[&[u8]]) -> bool {
        let admitted = self.seen.admit(parts);
        if !admitted {
            self.overflow += 1;
        }
        admitted
    }

    /// Admits a gRPC method (`{service}/{method}`, taken from the client's `:path`) as a span
    /// name. The conventions allow the real name only for methods the instrumentation
    /// recognises; a proxy knows no method set, so under `span_name: strict` every method is
    /// `_OTHER` (`false`, not counted as overflow), and otherwise methods share the per-VM set
    /// of guessed names with the templated HTTP routes.
    pub fn admit_rpc_method(&mut self, method: &[u8]) -> bool {
        self.style != SpanNameStyle::Strict && self.admit(&[method])
    }

    /// The cap on a whole name, in bytes (`limits.max_span_name_bytes`).
    pub fn max_name_bytes(&self) -> usize {
        self.max_name_bytes
    }

    /// The name's parts in the configured style, with `route` as the target if any.
    fn parts<'a>(&self, method: &'a [u8], known: bool, route: Option<&'a [u8]>) -> Named<'a> {
        let (sep, target): (&'a [u8], &'a [u8]) = match route {
            Some(r) => (b" ", r),
            None => (b"", b""),
        };
        let parts: [&'a [u8]; 4] = match self.style {
            SpanNameStyle::Semconv | SpanNameStyle::Strict => {
                [if known { method } else { OTHER_NAME }, sep, target, b""]
            }
            SpanNameStyle::Legacy => [
                b"HTTP ",
                if known { method } else { OTHER_METHOD },
                sep,
                target,
            ],
        };
        Named { parts, route }
    }
}

/// A set of at most `limit` name hashes: open addressing with linear probing in a table of
/// twice the limit (rounded to a power of two), allocated once when the VM is configured, so
/// a lookup or insert on the request path never allocates and probes a table at most half
/// full. 0 marks an empty slot (a hash of 0 is stored as 1).
///
/// Two names with the same 64-bit hash count as one: with a per-VM seed and at most 100,000
/// names, that admits a name beyond the limit with odds below 1 in 10^9, and no outsider can
/// aim for it.
#[derive(Clone, Debug)]
struct NameSet {
    slots: Box<[u64]>,
    len: usize,
    limit: usize,
    seed: u64,
}

impl NameSet {
    fn with_limit(limit: usize, seed: u64) -> Self {
        let size = (limit.max(1) * 2).next_power_of_two();
        Self {
            slots: vec![0; size].into_boxed_slice(),
            len: 0,
            limit,
            seed,
        }
    }

    /// Whether the name made of `parts` is in the set, adding it if there is room.
    fn admit(&mut self, parts: &[&[u8]]) -> bool {
        let h = hash(self.seed, parts).max(1);
        let mask = self.slots.len() - 1;
        let mut i = (h as usize) & mask;
        loop {
            match self.slots[i] {
                0 => break,
                s if s == h => return true,
                _ => i = (i + 1) & mask,
            }
        }
        if self.len >= self.limit {
            return false;
        }
        self.slots[i] = h;
        self.len += 1;
        true
    }
}

/// A keyed 64-bit hash of a name's parts, eight bytes at a time: each word (a part's last
/// few bytes read as one overlapping word, then the part's length, so parts cannot run into
/// each other) is folded in by a 64x64->128-bit multiply whose halves are xored, as wyhash
/// does; a final avalanche (from SplitMix64) makes the low bits that pick a slot depend on
/// every byte. A name is identified by its parts: the same name must always be given as the
/// same parts.
fn hash(seed: u64, parts: &[&[u8]]) -> u64 {
    #[inline(always)]
    fn fold(h: u64, w: u64) -> u64 {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let m = u128::from(h ^ w) * u128::from(K);
        (m as u64) ^ ((m >> 64) as u64)
    }
    #[inline(always)]
    fn u32_at(b: &[u8], i: usize) -> u64 {
        u64::from(u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]))
    }
    let mut h = seed ^ 0xa076_1d64_78bd_642f;
    for p in parts {
        let mut words = p.chunks_exact(8);
        for w in &mut words {
            h = fold(h, u32_at(w, 0) | u32_at(w, 4) << 32);
        }
        // 1 to 7 bytes, without a copy: two overlapping 4-byte reads, or the first, middle
        // and last byte (for a given length either determines every byte).
        let rest = words.remainder();
        let n = rest.len();
        if n >= 4 {
            h = fold(h, u32_at(rest, 0) | u32_at(rest, n - 4) << 32);
        } else if n > 0 {
            let w = u64::from(rest[0]) << 16 | u64::from(rest[n / 2]) << 8 | u64::from(rest[n - 1]);
            h = fold(h, w);
        }
        h = fold(h, p.len() as u64);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(
        n: &mut SpanNames,
        method: &str,
        known: bool,
        route: Route<'_>,
    ) -> (String, Option<String>) {
        let named = n.name(method.as_bytes(), known, route);
        (
            String::from_utf8(named.to_vec()).unwrap(),
            named.route.map(|r| String::from_utf8(r.to_vec()).unwrap()),
        )
    }

    fn s(v: &str) -> (String, Option<String>) {
        let (name, route) = v.split_once('|').unwrap_or((v, ""));
        (name.into(), (!route.is_empty()).then(|| route.into()))
    }

    #[test]
    fn styles() {
        let mut n = SpanNames::default();
        assert_eq!(
            name(&mut n, "GET", true, Route::Templated(b"/u/{id}")),
            s("GET /u/{id}|/u/{id}")
        );
        assert_eq!(
            name(&mut n, "PURGE", false, Route::Templated(b"/c")),
            s("HTTP /c|/c")
        );
        let mut n = SpanNames::new(SpanNameStyle::Legacy, 256, 256, 10, 0);
        assert_eq!(
            name(&mut n, "GET", true, Route::Configured(b"/u/{id}")),
            s("HTTP GET /u/{id}|/u/{id}")
        );
        assert_eq!(
            name(&mut n, "PURGE", false, Route::Templated(b"/c")),
            s("HTTP _OTHER /c|/c")
        );
    }

    #[test]
    fn strict_names_only_configured_routes() {
        let mut n = SpanNames::new(SpanNameStyle::Strict, 256, 256, 1000, 0);
        assert_eq!(
            name(&mut n, "GET", true, Route::Configured(b"/users/{id}")),
            s("GET /users/{id}|/users/{id}")
        );
        assert_eq!(
            name(&mut n, "GET", true, Route::Templated(b"/users/alice")),
            s("GET")
        );
        assert_eq!(
            name(&mut n, "BREW", false, Route::Templated(b"/pot")),
            s("HTTP")
        );
        // Strict names are bounded by construction: nothing is admitted or counted.
        assert_eq!((n.distinct(), n.overflow()), (0, 0));
    }

    #[test]
    fn the_name_and_the_route_share_one_cut() {
        // 2,000 letters: no identifier, so the templater keeps the segment.
        let path = format!("/{}", "a".repeat(2000));
        let mut n = SpanNames::default();
        let (nm, route) = name(&mut n, "GET", true, Route::Templated(path.as_bytes()));
        assert_eq!(nm.len(), 256);
        assert_eq!(nm, format!("GET {}", &path[..252]));
        assert_eq!(route.as_deref(), Some(&path[..252]));
        // The attribute cap is the tighter one: the name is cut to agree with it.
        let mut n = SpanNames::new(SpanNameStyle::Semconv, 256, 64, 1000, 0);
        let (nm, route) = name(&mut n, "DELETE", true, Route::Configured(path.as_bytes()));
        assert_eq!(nm, format!("DELETE {}", &path[..64]));
        assert_eq!(route.as_deref(), Some(&path[..64]));
        // A cut never splits a character.
        let path = format!("/{}", "é".repeat(300));
        let mut n = SpanNames::default();
        let (nm, route) = name(&mut n, "GET", true, Route::Templated(path.as_bytes()));
        assert_eq!(nm.len(), 255);
        assert_eq!(route.unwrap().len(), 251);
    }

    #[test]
    fn ten_thousand_user_names_stay_within_the_limit() {
        let mut n = SpanNames::default();
        let mut distinct = std::collections::HashSet::new();
        for i in 0..10_000u32 {
            // Letters only, so nothing here is an identifier: /users/aaaa, /users/aaab, ...
            let user: String = (0..4)
                .map(|k| (b'a' + (i / 26u32.pow(k) % 26) as u8) as char)
                .collect();
            let path = format!("/users/{user}");
            let (nm, route) = name(&mut n, "GET", true, Route::Templated(path.as_bytes()));
            match route {
                Some(r) => assert_eq!(nm, format!("GET {r}")),
                None => assert_eq!(nm, "GET"),
            }
            distinct.insert(nm);
        }
        // 1,000 admitted names and the `{method}` fallback.
        assert_eq!(distinct.len(), 1001);
        assert_eq!(n.distinct(), 1000);
        assert_eq!(n.overflow(), 9000);
        // Admitted names keep their name once the set is full; configured ones always do.
        assert_eq!(
            name(&mut n, "GET", true, Route::Templated(b"/users/aaaa")),
            s("GET /users/aaaa|/users/aaaa")
        );
        assert_eq!(
            name(&mut n, "GET", true, Route::Configured(b"/u/{id}")),
            s("GET /u/{id}|/u/{id}")
        );
        assert_eq!(n.overflow(), 9000);
        // The method is part of the name: a new method on an admitted route is a new name.
        assert_eq!(
            name(&mut n, "POST", true, Route::Templated(b"/users/aaaa")),
            s("POST")
        );
        assert_eq!(n.overflow(), 9001);
    }

    #[test]
    fn the_set_holds_exactly_its_limit() {
        for limit in [1usize, 2, 3, 7, 64, 1000] {
            let mut set = NameSet::with_limit(limit, 42);
            let admitted = (0..limit * 3)
                .filter(|i| set.admit(&[i.to_string().as_bytes()]))
                .count();
            assert_eq!(admitted, limit);
            assert!((0..limit).all(|i| set.admit(&[i.to_string().as_bytes()])));
            assert!(set.slots.len() >= 2 * limit);
        }
    }

    proptest! {
        #[test]
        fn any_path_gives_a_capped_name_that_agrees_with_its_route(
            path in proptest::collection::vec(any::<char>(), 0..400).prop_map(|c| c.into_iter().collect::<String>()),
            method in prop_oneof![
                proptest::sample::select(&crate::span::http::KNOWN_METHODS[..]).prop_map(|m| (m.to_vec(), true)),
                "[A-Za-z_]{1,40}".prop_map(|m| (m.into_bytes(), false)),
            ],
            configured: bool,
            max_name in 16u32..300,
            max_route in 16u32..300,
            style in prop_oneof![Just(SpanNameStyle::Semconv), Just(SpanNameStyle::Legacy), Just(SpanNameStyle::Strict)],
        ) {
            let mut n = SpanNames::new(style, max_name, max_route, 4, 7);
            let route = if configured { Route::Configured(path.as_bytes()) } else { Route::Templated(path.as_bytes()) };
            let (method, known) = method;
            let named = n.name(&method, known, route);
            let full = named.to_vec();
            prop_assert!(full.len() <= max_name as usize);
            prop_assert!(core::str::from_utf8(&full).is_ok());
            let token: &[u8] = if known {
                method.as_slice()
            } else if style == SpanNameStyle::Legacy {
                &b"_OTHER"[..]
            } else {
                &b"HTTP"[..]
            };
            let prefix = if style == SpanNameStyle::Legacy {
                [&b"HTTP "[..], token].concat()
            } else {
                token.to_vec()
            };
            match named.route {
                Some(r) => {
                    prop_assert!(r.len() <= max_route as usize);
                    prop_assert!(path.as_bytes().starts_with(r));
                    prop_assert_eq!(full, [&prefix[..], &b" "[..], r].concat());
                }
                None => prop_assert_eq!(full, prefix),
            }
        }
    }
}
