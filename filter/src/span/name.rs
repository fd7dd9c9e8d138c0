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
//!    output is only a guess at the route (`/users/alice` stays as it is), so the name it gives
//!    is provisional ([`Named::guessed`]): when the request is over, [`SpanNames::admit`] lets
//!    it stand only if the response showed the route exists (the caller decides that: not a
//!    404, say) and the per-VM set of at most `limits.max_span_names` names has it or room for
//!    it. Otherwise the span falls back to `{method}` with no `http.route`; only a full set is
//!    counted, in [`SpanNames::overflow`] (`meshtrace.span_names.overflow`). A scanner whose
//!    guesses are answered 404 therefore never uses up the set.
//!
//! `span_name: strict` skips step 2: names are `{method} {template}` for configured templates
//! and `{method}` for everything else, as the conventions prescribe when no route is known.
//!
//! The name and `http.route` always agree: the route is made valid UTF-8 (invalid sequences
//! become U+FFFD, [`crate::text::append`]) and cut once, into a buffer the naming state owns,
//! so that `{method} {route}` fits `limits.max_span_name_bytes` and the route fits
//! `limits.max_attribute_value_bytes`, both at a character boundary. The name, the attribute
//! and the admitted set are all made from that one result: two paths that render alike are
//! one name.

use crate::span::mesh::route::{Routes, SpanNameStyle};

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
    /// The name's parts, concatenated in order (empty parts add nothing): valid UTF-8 each,
    /// at most `limits.max_span_name_bytes` together.
    pub parts: [&'a [u8]; 4],
    /// `http.route` (`url.template` on client spans), or `None` when the name is `{method}`.
    pub route: Option<&'a [u8]>,
    /// The route is the templater's guess: the name is provisional until [`SpanNames::admit`]
    /// accepts it at the end of the request; if it does not, the name is its first
    /// [`Named::method_len`] bytes and there is no `http.route`.
    pub guessed: bool,
}

impl Named<'_> {
    /// The whole name, for tests and logs.
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts.concat()
    }

    /// The length of the `{method}` name this one falls back to (a prefix of it), in bytes.
    pub fn method_len(&self) -> usize {
        let all: usize = self.parts.iter().map(|p| p.len()).sum();
        match self.route {
            // The name is the method-only name, a space and the route.
            Some(r) => all - r.len() - 1,
            None => all,
        }
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
    /// The route of the name being made, as valid UTF-8 and cut; reserved at its largest when
    /// the VM is configured, so naming never allocates.
    route: Vec<u8>,
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
            route: Vec::with_capacity(max_name_bytes.min(max_route_bytes) as usize),
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
    /// form). `route` may hold any bytes: it is converted to valid UTF-8 and cut to the room the
    /// caps leave in one pass, and the name and `http.route` both borrow that result. A
    /// templated name comes back [`Named::guessed`]: nothing is admitted here, since whether
    /// the route exists is known only from the response. No allocation.
    pub fn name<'a>(&'a mut self, method: &'a [u8], known: bool, route: Route<'_>) -> Named<'a> {
        let (target, guessed) = match route {
            Route::Configured(t) => (Some(t), false),
            Route::Templated(_) if self.style == SpanNameStyle::Strict => (None, false),
            Route::Templated(t) => (Some(t), true),
        };
        let method_only = parts(self.style, method, known, None);
        let Some(target) = target else {
            return method_only;
        };
        // The name is the method-only name, a space and the target.
        let prefix = method_only.parts.iter().map(|p| p.len()).sum::<usize>() + 1;
        let room = self
            .max_name_bytes
            .saturating_sub(prefix)
            .min(self.max_route_bytes);
        self.route.clear();
        crate::text::append(target, room, &mut self.route);
        if self.route.is_empty() {
            return method_only;
        }
        Named {
            guessed,
            ..parts(self.style, method, known, Some(&self.route))
        }
    }

    /// [`SpanNames::name`] for a request's `path` (without its query): the route is
    /// `routes`' configured template or the templated path, written straight into the naming
    /// state's buffer, cut and made valid in the same pass ([`Routes::route_capped`]); under
    /// `span_name: strict` an unmatched path is not templated at all. Gives exactly what
    /// `name(method, known, route)` gives for the [`Route`] of [`Routes::route`]. No
    /// allocation.
    pub fn name_path<'a>(
        &'a mut self,
        method: &'a [u8],
        known: bool,
        routes: &Routes,
        path: &[u8],
    ) -> Named<'a> {
        let method_only = parts(self.style, method, known, None);
        // The name is the method-only name, a space and the route.
        let prefix = method_only.parts.iter().map(|p| p.len()).sum::<usize>() + 1;
        let room = self
            .max_name_bytes
            .saturating_sub(prefix)
            .min(self.max_route_bytes);
        let template = self.style != SpanNameStyle::Strict;
        match routes.route_capped(path, template, room, &mut self.route) {
            Some(configured) if !self.route.is_empty() => Named {
                guessed: !configured,
                ..parts(self.style, method, known, Some(&self.route))
            },
            _ => method_only,
        }
    }

    /// Admits a name guessed from request data (a [`Named::guessed`] HTTP name, or a gRPC
    /// method), as the span carries it, into the per-VM set. Call it only once the response
    /// showed that what the name stands for exists. `false` when the set is full and the name
    /// is not in it: the caller names the span by its low-cardinality fallback, and
    /// [`SpanNames::overflow`] counts one more.
    pub fn admit(&mut self, name: &[u8]) -> bool {
        let admitted = self.seen.admit(&[name]);
        if !admitted {
            self.overflow += 1;
        }
        admitted
    }

    /// Whether a gRPC method (`{service}/{method}`, taken from the client's `:path`) may name
    /// the span, provisionally (it is [`SpanNames::admit`]ted at the end like a guessed
    /// route). The conventions allow the real name only for methods the instrumentation
    /// recognises; a proxy knows no method set, so under `span_name: strict` no method is
    /// (`rpc.method` is `_OTHER`). Nor is a method longer than the name cap or the value cap:
    /// cut, two methods would share one name.
    pub fn may_name_rpc_method(&self, method: &[u8]) -> bool {
        self.style != SpanNameStyle::Strict
            && method.len() <= self.max_name_bytes.min(self.max_route_bytes)
    }

    /// The cap on a whole name, in bytes (`limits.max_span_name_bytes`).
    pub fn max_name_bytes(&self) -> usize {
        self.max_name_bytes
    }
}

/// The name's parts in `style`, with `route` as the target if any.
fn parts<'a>(
    style: SpanNameStyle,
    method: &'a [u8],
    known: bool,
    route: Option<&'a [u8]>,
) -> Named<'a> {
    let (sep, target): (&'a [u8], &'a [u8]) = match route {
        Some(r) => (b" ", r),
        None => (b"", b""),
    };
    let parts: [&'a [u8]; 4] = match style {
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
    Named {
        parts,
        route,
        guessed: false,
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

    /// Names a request and settles the name as a span's finish does when the response showed
    /// the route exists.
    fn name(
        n: &mut SpanNames,
        method: &str,
        known: bool,
        route: Route<'_>,
    ) -> (String, Option<String>) {
        let named = n.name(method.as_bytes(), known, route);
        let (full, r, guessed, method_len) = (
            named.to_vec(),
            named.route.map(<[u8]>::to_vec),
            named.guessed,
            named.method_len(),
        );
        if guessed && !n.admit(&full) {
            return (
                String::from_utf8(full[..method_len].to_vec()).unwrap(),
                None,
            );
        }
        (
            String::from_utf8(full).unwrap(),
            r.map(|r| String::from_utf8(r).unwrap()),
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
    fn invalid_utf8_is_converted_once_so_the_name_and_the_route_agree() {
        // `/` and 300 bytes 0xFF: each becomes U+FFFD (3 bytes), so 84 of them fill the
        // 252 bytes that `GET ` leaves of 256, and the route is exactly the name's tail.
        let mut path = b"/".to_vec();
        path.extend([0xff; 300]);
        let mut n = SpanNames::default();
        let (nm, route) = name(&mut n, "GET", true, Route::Templated(&path));
        let want = format!("/{}", "\u{FFFD}".repeat(83));
        assert_eq!(nm, format!("GET {want}"));
        assert_eq!(nm.len(), 254);
        assert_eq!(route, Some(want));
        // Three paths that render alike are one name, and take one place in the set.
        let mut n = SpanNames::new(SpanNameStyle::Semconv, 256, 256, 1, 0);
        for p in [&b"/x\xff"[..], b"/x\xfe", b"/x\xfd"] {
            assert_eq!(
                name(&mut n, "GET", true, Route::Templated(p)),
                s("GET /x\u{FFFD}|/x\u{FFFD}")
            );
        }
        assert_eq!((n.distinct(), n.overflow()), (1, 0));
    }

    #[test]
    fn a_guess_is_admitted_only_when_settled() {
        let mut n = SpanNames::new(SpanNameStyle::Semconv, 256, 256, 1, 0);
        // Naming alone takes no place in the set.
        for p in [&b"/a"[..], b"/b", b"/c"] {
            let named = n.name(b"GET", true, Route::Templated(p));
            assert!(named.guessed);
            assert_eq!(named.method_len(), 3);
        }
        assert_eq!((n.distinct(), n.overflow()), (0, 0));
        assert!(n.admit(b"GET /real"));
        assert!(!n.admit(b"GET /other"));
        assert_eq!((n.distinct(), n.overflow()), (1, 1));
        // A configured route is never a guess.
        assert!(!n.name(b"GET", true, Route::Configured(b"/u/{id}")).guessed);
    }

    #[test]
    fn rpc_methods_longer_than_a_cap_never_name_a_span() {
        let n = SpanNames::new(SpanNameStyle::Semconv, 16, 20, 10, 0);
        assert!(n.may_name_rpc_method(b"pkg.v1.G/SayHell"));
        assert!(!n.may_name_rpc_method(b"pkg.v1.Greeter/SayHello"));
        let n = SpanNames::new(SpanNameStyle::Semconv, 256, 16, 10, 0);
        assert!(!n.may_name_rpc_method(b"pkg.v1.G/SayHello"));
        let n = SpanNames::new(SpanNameStyle::Strict, 256, 256, 10, 0);
        assert!(!n.may_name_rpc_method(b"a.B/C"));
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
            // Any bytes, mostly ASCII with valid and invalid UTF-8 mixed in.
            path in proptest::collection::vec(
                prop_oneof![4 => 0x20u8..0x7f, 1 => any::<u8>(), 1 => Just(0xffu8), 1 => proptest::sample::select(&[0xc3u8, 0xa9, 0xe2, 0x82, 0xac][..])],
                0..400,
            ),
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
            let route = if configured { Route::Configured(&path) } else { Route::Templated(&path) };
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
            prop_assert_eq!(named.method_len(), prefix.len());
            prop_assert_eq!(named.guessed, named.route.is_some() && !configured);
            // The route is the longest prefix of the path's lossy decoding that fits.
            let lossy = String::from_utf8_lossy(&path);
            let room = (max_name as usize).saturating_sub(prefix.len() + 1).min(max_route as usize);
            let mut cut = room.min(lossy.len());
            while !lossy.is_char_boundary(cut) {
                cut -= 1;
            }
            let want = &lossy.as_bytes()[..cut];
            match named.route {
                Some(r) => {
                    prop_assert!(style != SpanNameStyle::Strict || configured);
                    prop_assert_eq!(r, want);
                    prop_assert_eq!(full, [&prefix[..], &b" "[..], r].concat());
                }
                None => {
                    prop_assert!(want.is_empty() || (style == SpanNameStyle::Strict && !configured));
                    prop_assert_eq!(full, prefix);
                }
            }
        }
    }
    proptest! {
        /// The direct path ([`SpanNames::name_path`], templating into the naming buffer) names
        /// every request as the general one: the route from [`Routes::route`], then
        /// [`SpanNames::name`].
        #[test]
        fn naming_a_path_directly_is_naming_its_route(
            // Path-like bytes: segments of words, digits, hex, ids, UTF-8 and invalid bytes.
            segs in proptest::collection::vec(
                prop_oneof![
                    "[a-z]{0,8}",
                    "[0-9]{1,12}",
                    "[0-9a-f]{14,40}",
                    "[A-Za-z0-9_-]{18,30}",
                    "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                    "[a-zé€]{1,6}",
                    proptest::collection::vec(any::<u8>(), 0..6).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
                ],
                0..12,
            ),
            raw in proptest::collection::vec(any::<u8>(), 0..4),
            leading_slash: bool,
            known: bool,
            max_name in 1u32..300,
            max_route in 1u32..300,
            with_templates: bool,
            style in prop_oneof![Just(SpanNameStyle::Semconv), Just(SpanNameStyle::Legacy), Just(SpanNameStyle::Strict)],
        ) {
            let mut path = if leading_slash { b"/".to_vec() } else { Vec::new() };
            path.extend_from_slice(segs.join("/").as_bytes());
            // Sometimes raw bytes (invalid UTF-8) at the end.
            path.extend_from_slice(&raw);
            let routes = if with_templates {
                Routes::compile(&["/api/{x}".into(), "/a/{b}/c".into(), "/é/{x}".into()]).unwrap()
            } else {
                Routes::default()
            };
            let method: &[u8] = if known { b"GET" } else { b"FROB" };
            let mut direct = SpanNames::new(style, max_name, max_route, 4, 7);
            let got = direct.name_path(method, known, &routes, &path);
            let (got_name, got_route, got_guessed) = (got.to_vec(), got.route.map(<[u8]>::to_vec), got.guessed);
            let mut general = SpanNames::new(style, max_name, max_route, 4, 7);
            let mut buf = crate::span::mesh::route::RouteBuf::new();
            let route = if routes.route(&path, &mut buf) {
                Route::Configured(&buf)
            } else {
                Route::Templated(&buf)
            };
            let want = general.name(method, known, route);
            prop_assert_eq!(got_name, want.to_vec());
            prop_assert_eq!(got_route, want.route.map(<[u8]>::to_vec));
            prop_assert_eq!(got_guessed, want.guessed);
        }
    }
}
