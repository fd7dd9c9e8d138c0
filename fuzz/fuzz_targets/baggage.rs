//! W3C baggage: what is kept obeys the limits and parses back to the same members.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtrace::propagation::baggage::{
    percent_decode, to_utf8_lossy, Baggage, MAX_BYTES, MAX_MEMBERS,
};

fuzz_target!(|data: &[u8]| {
    let fields: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let b = Baggage::parse(&fields);
    let mut out = Vec::new();
    b.write_to(&mut out);
    assert!(out.len() <= MAX_BYTES);
    assert!(b.stats.kept as usize <= MAX_MEMBERS);
    let again = Baggage::parse(&[&out[..]]);
    assert_eq!(again.stats.kept, b.stats.kept);
    assert_eq!(again.stats.malformed + again.stats.over_limit, 0);
    let mut raw = [0u8; 64];
    let n = percent_decode(data, &mut raw);
    let mut text = [0u8; 64];
    let m = to_utf8_lossy(&raw[..n], &mut text);
    assert!(core::str::from_utf8(&text[..m]).is_ok());
});
