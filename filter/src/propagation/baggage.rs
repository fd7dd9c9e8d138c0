//! W3C Baggage: `baggage: key=value;prop,key2=value2`.
//!
//! A valid header within the limits (64 members, 8192 bytes over all `baggage` fields) is
//! forwarded untouched. Otherwise the request still goes on: members that break the grammar are
//! dropped, and valid ones are kept from the left while they fit the limits, whole members only
//! as the spec requires. [`BaggageStats`] says what was dropped so the adapter can count it.
//! Values stay percent-encoded here; only the allowlisted ones copied into span attributes are
//! decoded.

use smallvec::SmallVec;

use super::context::SpanStart;
use super::inject::Injection;
use crate::text::trim_ows;

/// The header's name.
pub const HEADER: &str = "baggage";
/// Members a platform must propagate at least.
pub const MAX_MEMBERS: usize = 64;
/// Bytes (all `baggage` fields combined) a platform must propagate at least.
pub const MAX_BYTES: usize = 8192;

/// One parsed list member. `value` is still percent-encoded; `properties` is the raw text after
/// the first `;` (empty when there are none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member<'a> {
    /// The member's key.
    pub key: &'a [u8],
    /// The member's value, still percent-encoded.
    pub value: &'a [u8],
    /// Everything after the first `;`, raw.
    pub properties: &'a [u8],
}

/// RFC 7230 `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&c| is_tchar(c))
}

/// `baggage-octet`: printable US-ASCII but `"`, `,`, `;` and `\`.
fn is_baggage_octet(c: u8) -> bool {
    matches!(c, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// `key OWS "=" OWS value`, split at the first `=` since values may contain more.
fn split_pair(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = s.iter().position(|&b| b == b'=')?;
    let key = trim_ows(s.get(..eq)?);
    let value = trim_ows(s.get(eq + 1..)?);
    (is_token(key) && value.iter().all(|&c| is_baggage_octet(c))).then_some((key, value))
}

/// `property = key OWS "=" OWS value / key OWS`.
fn valid_property(p: &[u8]) -> bool {
    let p = trim_ows(p);
    if p.contains(&b'=') {
        split_pair(p).is_some()
    } else {
        is_token(p)
    }
}

/// Parses one list member (surrounding whitespace allowed).
pub fn parse_member(raw: &[u8]) -> Option<Member<'_>> {
    let raw = trim_ows(raw);
    let (head, properties) = match raw.iter().position(|&b| b == b';') {
        Some(semi) => (raw.get(..semi)?, trim_ows(raw.get(semi + 1..)?)),
        None => (raw, &[][..]),
    };
    let (key, value) = split_pair(head)?;
    if !properties.is_empty() && !properties.split(|&b| b == b';').all(valid_property) {
        return None;
    }
    // `a=1;` has an empty property, which the grammar does not allow.
    if properties.is_empty() && head.len() != raw.len() {
        return None;
    }
    Some(Member {
        key,
        value,
        properties,
    })
}

/// Appends `key=value[;properties]`.
pub fn write_member(m: &Member<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(m.key);
    out.push(b'=');
    out.extend_from_slice(m.value);
    if !m.properties.is_empty() {
        out.push(b';');
        out.extend_from_slice(m.properties);
    }
}

/// What happened to the members of one request's baggage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BaggageStats {
    /// Members forwarded.
    pub kept: u16,
    /// Members dropped for breaking the grammar.
    pub malformed: u16,
    /// Valid members dropped to stay within [`MAX_MEMBERS`] and [`MAX_BYTES`].
    pub over_limit: u16,
}

/// The fate of one member while walking the list.
enum MemberOutcome<'a> {
    Kept(Member<'a>, &'a [u8]),
    Malformed,
    OverLimit,
}

/// A request's baggage: its header fields, borrowed, and what forwarding them within the
/// limits keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Baggage<'a> {
    fields: SmallVec<[&'a [u8]; 2]>,
    /// What forwarding within the limits keeps and drops.
    pub stats: BaggageStats,
    /// The fields can go upstream as they are.
    unchanged: bool,
}

impl<'a> Baggage<'a> {
    /// Parses the `baggage` fields of a request, in order.
    pub fn parse(fields: &[&'a [u8]]) -> Self {
        // Most requests carry none: nothing to copy or walk.
        if fields.is_empty() {
            return Self {
                unchanged: true,
                ..Self::default()
            };
        }
        Self::walk_fields(fields)
    }

    /// [`Baggage::parse`] for any fields: copies and walks them.
    fn walk_fields(fields: &[&'a [u8]]) -> Self {
        let mut b = Self {
            fields: fields.iter().copied().collect(),
            stats: BaggageStats::default(),
            unchanged: false,
        };
        let mut stats = BaggageStats::default();
        b.walk(|v| match v {
            MemberOutcome::Kept(..) => stats.kept = stats.kept.saturating_add(1),
            MemberOutcome::Malformed => stats.malformed = stats.malformed.saturating_add(1),
            MemberOutcome::OverLimit => stats.over_limit = stats.over_limit.saturating_add(1),
        });
        b.stats = stats;
        let total = fields.iter().map(|f| f.len()).sum::<usize>() + fields.len().saturating_sub(1);
        b.unchanged = stats.malformed == 0 && stats.over_limit == 0 && total <= MAX_BYTES;
        b
    }

    /// True when the request carried no baggage.
    pub fn is_absent(&self) -> bool {
        self.fields.is_empty()
    }

    /// True when the request's fields can be forwarded exactly as they came.
    pub fn unchanged(&self) -> bool {
        self.unchanged
    }

    /// Walks the members in order, deciding each one's fate.
    fn walk(&self, mut f: impl FnMut(MemberOutcome<'a>)) {
        let (mut count, mut bytes) = (0usize, 0usize);
        let members = self
            .fields
            .iter()
            .flat_map(|field| field.split(|&b| b == b','))
            .map(trim_ows)
            .filter(|m| !m.is_empty());
        for raw in members {
            let Some(m) = parse_member(raw) else {
                f(MemberOutcome::Malformed);
                continue;
            };
            let needed = raw.len() + usize::from(count > 0);
            if count < MAX_MEMBERS && bytes + needed <= MAX_BYTES {
                count += 1;
                bytes += needed;
                f(MemberOutcome::Kept(m, raw));
            } else {
                f(MemberOutcome::OverLimit);
            }
        }
    }

    /// Appends the members that are kept, comma-separated, each as it arrived.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut first = true;
        self.walk(|v| {
            if let MemberOutcome::Kept(_, raw) = v {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(raw);
            }
        });
    }

    /// The still-encoded value of the first kept member named `key`.
    pub fn get(&self, key: &[u8]) -> Option<&'a [u8]> {
        let mut found = None;
        self.walk(|v| {
            if let MemberOutcome::Kept(m, _) = v {
                if found.is_none() && m.key == key {
                    found = Some(m.value);
                }
            }
        });
        found
    }
}

/// Percent-encodes `v` into `out`, leaving only RFC 3986 unreserved characters as they are
/// (more than the spec requires, and what common encoders do).
pub fn percent_encode(v: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in v {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c);
        } else {
            out.extend_from_slice(&[b'%', HEX[(c >> 4) as usize], HEX[(c & 0xf) as usize]]);
        }
    }
}

/// Writes `bytes` into `out` as UTF-8, each invalid sequence replaced by U+FFFD as the spec
/// says for decoded values; stops at the last whole character that fits.
pub fn to_utf8_lossy(bytes: &[u8], out: &mut [u8]) -> usize {
    const REPLACEMENT: &[u8] = "\u{fffd}".as_bytes();
    let mut o = 0;
    let mut push = |s: &[u8], out: &mut [u8]| -> bool {
        match out.get_mut(o..o + s.len()) {
            Some(dst) => {
                dst.copy_from_slice(s);
                o += s.len();
                true
            }
            None => false,
        }
    };
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            let mut buf = [0u8; 4];
            if !push(ch.encode_utf8(&mut buf).as_bytes(), out) {
                return o;
            }
        }
        if !chunk.invalid().is_empty() && !push(REPLACEMENT, out) {
            return o;
        }
    }
    o
}

/// Forwards the request's baggage: valid baggage as it came (no host call), baggage the limits
/// cut re-written without the dropped members, and none at all when nothing is left.
pub fn inject(s: &SpanStart<'_>, out: &mut Injection) {
    let bg = &s.baggage;
    if bg.is_absent() || bg.unchanged() {
        // Valid baggage is forwarded as it came, without a host call.
    } else if bg.stats.kept > 0 {
        out.put(HEADER, |b| bg.write_to(b));
    } else {
        out.remove.push(HEADER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::percent_decode;
    use proptest::prelude::*;

    fn member(s: &str) -> Member<'_> {
        parse_member(s.as_bytes()).unwrap_or_else(|| panic!("{s}"))
    }

    fn decoded(v: &[u8]) -> String {
        let mut raw = [0u8; 256];
        let n = percent_decode(v, &mut raw);
        let mut text = [0u8; 256];
        let m = to_utf8_lossy(&raw[..n], &mut text);
        String::from_utf8(text[..m].to_vec()).unwrap()
    }

    #[test]
    fn no_fields_parse_as_the_walk_would() {
        assert_eq!(Baggage::parse(&[]), Baggage::walk_fields(&[]));
        assert!(Baggage::parse(&[]).is_absent());
    }

    #[test]
    fn spec_vectors() {
        let m = member("SomeKey \t = \t SomeValue \t ; \t SomeProp");
        assert_eq!(
            (m.key, m.value, m.properties),
            (&b"SomeKey"[..], &b"SomeValue"[..], &b"SomeProp"[..])
        );
        assert_eq!(
            member("SomeKey=SomeValue=equals").value,
            b"SomeValue=equals"
        );
        let b = Baggage::parse(&[b"userId=Am%C3%A9lie,serverNode=DF%2028,isProduction=false"]);
        assert!(b.unchanged());
        assert_eq!(b.stats.kept, 3);
        assert_eq!(decoded(b.get(b"userId").unwrap()), "Amélie");
        assert_eq!(decoded(b.get(b"serverNode").unwrap()), "DF 28");
        assert_eq!(b.get(b"isProduction"), Some(&b"false"[..]));
        let h = b"key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue";
        assert_eq!(h.len(), 86);
        let b = Baggage::parse(&[h]);
        assert!(b.unchanged());
        assert_eq!(
            b.stats,
            BaggageStats {
                kept: 3,
                malformed: 0,
                over_limit: 0
            }
        );
        assert_eq!(b.get(b"key2"), Some(&b"value2"[..]));
        let mut out = Vec::new();
        percent_encode(b"\t \"';=asdf!@#$%^&*()", &mut out);
        assert_eq!(out, b"%09%20%22%27%3B%3Dasdf%21%40%23%24%25%5E%26%2A%28%29");
        assert_eq!(decoded(&out), "\t \"';=asdf!@#$%^&*()");
    }

    #[test]
    fn decoding_edge_cases() {
        assert_eq!(decoded(b"100%"), "100%");
        assert_eq!(decoded(b"%zz%4"), "%zz%4");
        assert_eq!(decoded(b"%FF%41"), "\u{fffd}A");
        let mut small = [0u8; 3];
        assert_eq!(to_utf8_lossy("aé".as_bytes(), &mut small), 3);
        assert_eq!(to_utf8_lossy("aaé".as_bytes(), &mut small), 2);
    }

    #[test]
    fn malformed_members_are_dropped_and_counted() {
        for bad in [
            "=v", "k", "k v=1", "k=a b", "k=\"q\"", "k=1;", "k=1;;p", "k=1;p q", "ké=1", "k=\\",
        ] {
            assert_eq!(parse_member(bad.as_bytes()), None, "{bad}");
        }
        let fields: [&[u8]; 2] = [b"a=1,bad,b=2", b"c=3, =x"];
        let b = Baggage::parse(&fields);
        assert!(!b.unchanged());
        assert_eq!(
            b.stats,
            BaggageStats {
                kept: 3,
                malformed: 2,
                over_limit: 0
            }
        );
        let mut out = Vec::new();
        b.write_to(&mut out);
        assert_eq!(out, b"a=1,b=2,c=3");
        // Empty members between commas are skipped without rewriting.
        assert!(Baggage::parse(&[b"a=1,,b=2"]).unchanged());
        assert!(Baggage::parse(&[]).is_absent());
    }

    #[test]
    fn limits_drop_whole_members() {
        let many: Vec<String> = (0..70).map(|i| format!("k{i}=v")).collect();
        let h = many.join(",");
        let b = Baggage::parse(&[h.as_bytes()]);
        assert_eq!(
            b.stats,
            BaggageStats {
                kept: 64,
                malformed: 0,
                over_limit: 6
            }
        );
        let mut out = Vec::new();
        b.write_to(&mut out);
        assert_eq!(out, many[..64].join(",").as_bytes());
        assert_eq!(b.get(b"k65"), None);
        // Exactly 64 members are forwarded untouched.
        assert!(Baggage::parse(&[many[..64].join(",").as_bytes()]).unchanged());

        let big = format!("big={}", "x".repeat(8000));
        let h = format!("a=1,{big},b={}", "y".repeat(300));
        let b = Baggage::parse(&[h.as_bytes()]);
        assert_eq!(
            b.stats,
            BaggageStats {
                kept: 2,
                malformed: 0,
                over_limit: 1
            }
        );
        let mut out = Vec::new();
        b.write_to(&mut out);
        assert_eq!(out.len(), 4 + big.len());
        assert!(out.starts_with(b"a=1,big="));
        // 8192 bytes exactly stay; across two fields the comma counts.
        let exact = format!("k={}", "x".repeat(MAX_BYTES - 2));
        assert!(Baggage::parse(&[exact.as_bytes()]).unchanged());
        let b = Baggage::parse(&[exact.as_bytes(), b"z=1"]);
        assert!(!b.unchanged());
        assert_eq!(b.stats.over_limit, 1);
    }

    fn arb_member() -> impl Strategy<Value = (String, String, String)> {
        (
            "[A-Za-z0-9!#$&'*+.^_|~-]{1,12}",
            proptest::collection::vec(any::<char>(), 0..8).prop_map(|c| c.into_iter().collect()),
            proptest::option::of("[a-z]{1,5}(=[a-z0-9]{0,5})?").prop_map(|p| p.unwrap_or_default()),
        )
    }

    proptest! {
        #[test]
        fn member_round_trip((key, value, props) in arb_member()) {
            let mut encoded = Vec::new();
            percent_encode(value.as_bytes(), &mut encoded);
            let m = Member { key: key.as_bytes(), value: &encoded, properties: props.as_bytes() };
            let mut out = Vec::new();
            write_member(&m, &mut out);
            let back = parse_member(&out);
            prop_assert_eq!(back, Some(m));
            let d = decoded(&encoded);
            prop_assert_eq!(d, value);
        }

        #[test]
        fn list_round_trip(members in proptest::collection::vec(arb_member(), 0..80)) {
            let mut header = Vec::new();
            for (i, (k, v, p)) in members.iter().enumerate() {
                if i > 0 { header.push(b','); }
                let mut enc = Vec::new();
                percent_encode(v.as_bytes(), &mut enc);
                write_member(&Member { key: k.as_bytes(), value: &enc, properties: p.as_bytes() }, &mut header);
            }
            let b = Baggage::parse(&[&header]);
            let mut out = Vec::new();
            b.write_to(&mut out);
            prop_assert!(out.len() <= MAX_BYTES);
            prop_assert_eq!(b.stats.kept as usize, members.len().min(MAX_MEMBERS));
            prop_assert_eq!(b.unchanged(), members.len() <= MAX_MEMBERS && header.len() <= MAX_BYTES);
            if b.unchanged() {
                prop_assert_eq!(&out, &header);
            }
        }

        #[test]
        fn never_panics(s in "\\PC{0,60}") {
            let b = Baggage::parse(&[s.as_bytes()]);
            let mut out = Vec::new();
            b.write_to(&mut out);
            let mut buf = [0u8; 16];
            let _ = percent_decode(s.as_bytes(), &mut buf);
        }
    }
}
