//! Caps on what leaves the proxy: every string the core writes into OTLP is bounded, and a cut
//! never splits a UTF-8 character.
//!
//! The configured caps live in `limits` (`span::capture::Limits`); the span name has its own
//! module (`span::name`), the recorded `tracestate` its cap beside the format
//! (`propagation::tracecontext::MAX_TRACE_STATE_BYTES`). This module holds the cuts
//! themselves and the caps a standard fixes rather than the configuration.

/// Attribute keys built from configuration (`baggage.<key>`, `resource` keys) are at most this
/// long; configuration validation refuses longer ones.
pub const MAX_CONFIGURED_KEY_BYTES: usize = 128;

/// The longest prefix of `s` that is at most `max` bytes and does not end inside a UTF-8
/// character: continuation bytes (`10xxxxxx`) at the cut are backed off, so a value that was
/// valid UTF-8 stays valid. Bytes that are not UTF-8 are cut at `max` like any other byte.
pub fn cut_at_char_boundary(s: &[u8], max: usize) -> &[u8] {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    // At most three continuation bytes precede a character's end; more means the input was
    // not UTF-8 there, and the plain cut is as good as any.
    while cut > 0 && max - cut < 3 && (s[cut] & 0xc0) == 0x80 {
        cut -= 1;
    }
    if (s[cut] & 0xc0) == 0x80 {
        cut = max;
    }
    &s[..cut]
}

/// `s` cut to at most `max` bytes at a `,` that separates `tracestate` list members, dropping
/// members from the right end; empty when even the first member is longer than `max`.
pub fn cut_list_members(s: &[u8], max: usize) -> &[u8] {
    if s.len() <= max {
        return s;
    }
    match s[..=max].iter().rposition(|&b| b == b',') {
        Some(i) => &s[..i],
        None => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cuts_on_character_boundaries() {
        let s = "héllo wörld €".as_bytes();
        assert_eq!(cut_at_char_boundary(s, 100), s);
        assert_eq!(cut_at_char_boundary(s, 2), b"h");
        assert_eq!(cut_at_char_boundary(s, 3), "hé".as_bytes());
        assert_eq!(cut_at_char_boundary("€".as_bytes(), 2), b"");
        assert_eq!(cut_at_char_boundary(b"", 0), b"");
        // Not UTF-8: a run of continuation bytes is cut where asked.
        assert_eq!(cut_at_char_boundary(&[0x80; 10], 6), &[0x80; 6]);
    }

    #[test]
    fn list_members_are_dropped_whole_from_the_right() {
        assert_eq!(cut_list_members(b"a=1,b=2,c=3", 11), b"a=1,b=2,c=3");
        assert_eq!(cut_list_members(b"a=1,b=2,c=3", 10), b"a=1,b=2");
        assert_eq!(cut_list_members(b"a=1,b=2,c=3", 7), b"a=1,b=2");
        assert_eq!(cut_list_members(b"a=1,b=2,c=3", 6), b"a=1");
        assert_eq!(cut_list_members(b"abcdef=1,b=2", 4), b"");
    }

    proptest! {
        #[test]
        fn a_cut_is_a_valid_prefix(s in "\\PC{0,40}", max in 0usize..200) {
            let cut = cut_at_char_boundary(s.as_bytes(), max);
            prop_assert!(cut.len() <= max);
            prop_assert!(s.as_bytes().starts_with(cut));
            prop_assert!(core::str::from_utf8(cut).is_ok());
            // Nothing more was cut than the character that straddles `max`.
            prop_assert!(cut.len() + 3 >= max.min(s.len()));
        }
    }
}
