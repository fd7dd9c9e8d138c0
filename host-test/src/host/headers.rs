//! An ordered header map with Envoy's rules: keys are lower-cased when they are set, a lookup
//! returns the first value of a repeated header, and the order of entries is kept.

/// Header entries as bytes: hostile tests put invalid UTF-8 and NULs in them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Readable in assertion failures: entries as (lossy) text, not byte arrays.
impl std::fmt::Debug for HeaderMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.to_lossy()).finish()
    }
}

fn lower(key: &[u8]) -> Vec<u8> {
    key.to_ascii_lowercase()
}

impl HeaderMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// A map from `(name, value)` pairs, names lower-cased.
    pub fn from_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Self {
        let mut m = Self::new();
        for (k, v) in pairs {
            m.add(k.as_ref(), v.as_ref());
        }
        m
    }

    /// How many entries the map holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// The first value of `key` (case-insensitive).
    pub fn get_bytes(&self, key: impl AsRef<[u8]>) -> Option<&[u8]> {
        let key = lower(key.as_ref());
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `key` as text; `None` when absent or not UTF-8.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.get_bytes(key)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `key`, in order.
    pub fn get_all(&self, key: &str) -> Vec<&[u8]> {
        let key = lower(key.as_bytes());
        self.entries
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// Appends an entry.
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.entries.push((lower(key), value.to_vec()));
    }

    /// Sets `key`: the first entry takes the value in place, later duplicates go; absent keys
    /// are appended.
    pub fn replace(&mut self, key: &[u8], value: &[u8]) {
        let key = lower(key);
        match self.entries.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                self.entries[i].1 = value.to_vec();
                let mut seen = 0;
                self.entries.retain(|(k, _)| {
                    if *k != key {
                        return true;
                    }
                    seen += 1;
                    seen == 1
                });
            }
            None => self.entries.push((key, value.to_vec())),
        }
    }

    /// Removes every entry of `key`.
    pub fn remove(&mut self, key: &[u8]) {
        let key = lower(key);
        self.entries.retain(|(k, _)| *k != key);
    }

    /// Envoy's `byteSize()`: the sum of key and value lengths.
    pub fn byte_size(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Serialized in the proxy-wasm pairs format.
    pub fn to_pairs_bytes(&self) -> Vec<u8> {
        super::pairs::encode(&self.entries)
    }

    /// The entries with lossy UTF-8 text, for printing and JSON.
    pub fn to_lossy(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    /// Values of repeated keys joined with `,`, keyed by name in first-seen order: how Envoy
    /// presents `request.headers` as a property map.
    pub fn joined(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (k, v) in &self.entries {
            match out.iter_mut().find(|(ok, _)| ok == k) {
                Some((_, ov)) => {
                    ov.push(b',');
                    ov.extend_from_slice(v);
                }
                None => out.push((k.clone(), v.clone())),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_rules() {
        let mut m = HeaderMap::from_pairs(&[("X-A", "1"), ("b", "2"), ("x-a", "3")]);
        assert_eq!(m.get("x-a"), Some("1"));
        assert_eq!(m.get("X-A"), Some("1"));
        assert_eq!(m.get_all("x-a"), vec![&b"1"[..], b"3"]);
        assert_eq!(m.joined()[0], (b"x-a".to_vec(), b"1,3".to_vec()));
        m.replace(b"X-a", b"9");
        assert_eq!(
            m.to_lossy(),
            vec![("x-a".into(), "9".into()), ("b".into(), "2".into())]
        );
        m.replace(b"c", b"");
        m.remove(b"B");
        assert_eq!(
            m.to_lossy(),
            vec![("x-a".into(), "9".into()), ("c".into(), "".into())]
        );
        assert_eq!(m.byte_size(), 5);
    }
}
