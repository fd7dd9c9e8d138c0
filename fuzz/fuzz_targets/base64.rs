//! Base64: decoding never panics, and re-encoding what decoded decodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtrace::base64::{decode, encode, encoded_len};

fuzz_target!(|data: &[u8]| {
    let mut bin = vec![0u8; data.len()];
    if let Some(n) = decode(data, &mut bin) {
        let mut text = vec![0u8; encoded_len(n)];
        for pad in [true, false] {
            let m = encode(&bin[..n], &mut text, pad).expect("sized for the padded form");
            let mut back = vec![0u8; n];
            assert_eq!(decode(&text[..m], &mut back), Some(n));
            assert_eq!(back, &bin[..n]);
        }
    }
});
