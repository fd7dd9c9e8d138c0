//! The proxy-wasm "pairs" serialization of header maps (and of Envoy map-valued properties):
//! `u32 n`, then `n × (u32 key_len, u32 value_len)`, then each key and value followed by a NUL.

/// Serializes `pairs`; an empty map is the empty buffer, as Envoy hands it to the guest.
pub fn encode<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    if pairs.is_empty() {
        return Vec::new();
    }
    let data: usize = pairs
        .iter()
        .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 2)
        .sum();
    let mut out = Vec::with_capacity(4 + 8 * pairs.len() + data);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

/// Decoded `(key, value)` entries, as bytes.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Why a guest-supplied pairs buffer was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairsError(pub String);

/// Parses a guest-supplied pairs buffer. An empty buffer (or a lone NUL) is the empty map.
pub fn decode(buf: &[u8]) -> Result<Pairs, PairsError> {
    if buf.is_empty() || buf == [0] {
        return Ok(Vec::new());
    }
    let word = |at: usize| -> Result<usize, PairsError> {
        buf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| PairsError(format!("truncated at byte {at} of {}", buf.len())))
    };
    let n = word(0)?;
    let sizes_end = n
        .checked_mul(8)
        .and_then(|s| s.checked_add(4))
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| PairsError(format!("{n} pairs do not fit in {} bytes", buf.len())))?;
    let mut out = Vec::with_capacity(n);
    let mut at = sizes_end;
    for i in 0..n {
        let klen = word(4 + 8 * i)?;
        let vlen = word(8 + 8 * i)?;
        let key = take(buf, &mut at, klen)?;
        let value = take(buf, &mut at, vlen)?;
        out.push((key, value));
    }
    Ok(out)
}

/// Reads `len` bytes and the NUL after them.
fn take(buf: &[u8], at: &mut usize, len: usize) -> Result<Vec<u8>, PairsError> {
    let end = at
        .checked_add(len)
        .filter(|&e| e < buf.len())
        .ok_or_else(|| PairsError(format!("entry at byte {at} overruns {} bytes", buf.len())))?;
    if buf[end] != 0 {
        return Err(PairsError(format!(
            "missing NUL after the entry at byte {at}"
        )));
    }
    let v = buf[*at..end].to_vec();
    *at = end + 1;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_example_round_trips() {
        let bytes = encode(&[("a", "1"), ("b", "22")]);
        let expected: Vec<u8> = [
            &[2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0][..],
            b"a\x001\x00b\x0022\x00",
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(
            decode(&bytes).unwrap(),
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"22".to_vec())
            ]
        );
        assert!(encode::<&str, &str>(&[]).is_empty());
        assert_eq!(decode(&[0]).unwrap(), vec![]);
    }

    #[test]
    fn malformed_buffers_are_errors() {
        assert!(decode(&[5, 0, 0, 0]).is_err());
        let mut bytes = encode(&[("a", "1")]);
        bytes.pop();
        assert!(decode(&bytes).is_err());
        let mut bytes = encode(&[("a", "1")]);
        let last = bytes.len() - 1;
        bytes[last] = b'x';
        assert!(decode(&bytes).is_err());
        assert!(decode(&[0xff, 0xff, 0xff, 0xff, 0]).is_err());
    }
}
