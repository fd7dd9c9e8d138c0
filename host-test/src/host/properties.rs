//! The property tree behind `proxy_get_property`, with Envoy's value encodings: strings raw,
//! int and uint as 8 little-endian bytes, doubles as 8-byte IEEE-754, bools as one byte, maps in
//! the pairs format with each value encoded by its own type.
//!
//! Tests address values with dotted paths (`xds.listener_direction`); the guest asks with
//! `\0`-joined segments (`xds\0listener_direction`).

/// One property value.
#[derive(Clone, Debug, PartialEq)]
pub enum PropValue {
    /// A string or bytes value, handed over raw.
    Bytes(Vec<u8>),
    /// int64, and also timestamps and durations (nanoseconds).
    Int(i64),
    /// uint64.
    Uint(u64),
    /// double.
    Double(f64),
    /// bool.
    Bool(bool),
    /// A map (or a message walked as one), in insertion order.
    Map(Vec<(String, PropValue)>),
}

impl PropValue {
    /// Envoy's serialization of this value.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Bytes(b) => b.clone(),
            Self::Int(i) => i.to_le_bytes().to_vec(),
            Self::Uint(u) => u.to_le_bytes().to_vec(),
            Self::Double(d) => d.to_le_bytes().to_vec(),
            Self::Bool(b) => vec![u8::from(*b)],
            Self::Map(entries) => {
                let pairs: Vec<(Vec<u8>, Vec<u8>)> = entries
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.encode()))
                    .collect();
                super::pairs::encode(&pairs)
            }
        }
    }

    /// From JSON: strings, booleans, integers (uint when above `i64::MAX`), floats and objects.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        use serde_json::Value as J;
        Ok(match v {
            J::String(s) => Self::Bytes(s.as_bytes().to_vec()),
            J::Bool(b) => Self::Bool(*b),
            J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => Self::Int(i),
                (None, Some(u), _) => Self::Uint(u),
                (_, _, Some(f)) => Self::Double(f),
                _ => return Err(format!("unsupported number {n}")),
            },
            J::Object(m) => {
                let mut entries = Vec::with_capacity(m.len());
                for (k, v) in m {
                    let value = Self::from_json(v).map_err(|e| format!("{k}: {e}"))?;
                    entries.push((k.clone(), value));
                }
                Self::Map(entries)
            }
            J::Null => return Err("null is not a property value".into()),
            J::Array(_) => return Err("arrays are not supported; use an object or a string".into()),
        })
    }
}

impl From<&str> for PropValue {
    fn from(s: &str) -> Self {
        Self::Bytes(s.as_bytes().to_vec())
    }
}
impl From<String> for PropValue {
    fn from(s: String) -> Self {
        Self::Bytes(s.into_bytes())
    }
}
impl From<&[u8]> for PropValue {
    fn from(b: &[u8]) -> Self {
        Self::Bytes(b.to_vec())
    }
}
impl From<Vec<u8>> for PropValue {
    fn from(b: Vec<u8>) -> Self {
        Self::Bytes(b)
    }
}
impl From<i64> for PropValue {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}
impl From<i32> for PropValue {
    fn from(i: i32) -> Self {
        Self::Int(i.into())
    }
}
impl From<u64> for PropValue {
    fn from(u: u64) -> Self {
        Self::Uint(u)
    }
}
impl From<f64> for PropValue {
    fn from(d: f64) -> Self {
        Self::Double(d)
    }
}
impl From<bool> for PropValue {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

/// A tree of properties addressed by path segments.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PropertyTree {
    root: Vec<(String, PropValue)>,
}

/// Splits a dotted test path into segments.
pub fn dotted(path: &str) -> Vec<&str> {
    path.split('.').collect()
}

impl PropertyTree {
    /// Sets the value at `segments`, turning scalars on the way into maps.
    pub fn set(&mut self, segments: &[&str], value: PropValue) {
        let Some((last, parents)) = segments.split_last() else {
            return;
        };
        let mut level = &mut self.root;
        for seg in parents {
            let i = match level.iter().position(|(k, _)| k == seg) {
                Some(i) => i,
                None => {
                    level.push((seg.to_string(), PropValue::Map(Vec::new())));
                    level.len() - 1
                }
            };
            if !matches!(level[i].1, PropValue::Map(_)) {
                level[i].1 = PropValue::Map(Vec::new());
            }
            level = match &mut level[i].1 {
                PropValue::Map(m) => m,
                _ => unreachable!("made a map just above"),
            };
        }
        match level.iter_mut().find(|(k, _)| k == last) {
            Some((_, v)) => *v = value,
            None => level.push((last.to_string(), value)),
        }
    }

    /// Sets a value by dotted path.
    pub fn set_dotted(&mut self, path: &str, value: PropValue) {
        self.set(&dotted(path), value);
    }

    /// The value at `segments` (byte segments, as the guest sends them).
    pub fn get(&self, segments: &[&[u8]]) -> Option<&PropValue> {
        let (first, rest) = segments.split_first()?;
        let mut value = self
            .root
            .iter()
            .find(|(k, _)| k.as_bytes() == *first)
            .map(|(_, v)| v)?;
        for seg in rest {
            value = match value {
                PropValue::Map(m) => m
                    .iter()
                    .find(|(k, _)| k.as_bytes() == *seg)
                    .map(|(_, v)| v)?,
                _ => return None,
            };
        }
        Some(value)
    }

    /// Every top-level entry of `other` merged over this tree (deeply for maps).
    pub fn merge(&mut self, other: &PropertyTree) {
        fn walk(prefix: &mut Vec<String>, v: &PropValue, into: &mut PropertyTree) {
            match v {
                PropValue::Map(m) if !m.is_empty() => {
                    for (k, v) in m {
                        prefix.push(k.clone());
                        walk(prefix, v, into);
                        prefix.pop();
                    }
                }
                _ => {
                    let segs: Vec<&str> = prefix.iter().map(String::as_str).collect();
                    into.set(&segs, v.clone());
                }
            }
        }
        let mut prefix = Vec::new();
        for (k, v) in &other.root {
            prefix.push(k.clone());
            walk(&mut prefix, v, self);
            prefix.pop();
        }
    }
}

/// Splits a guest path on `\0`.
pub fn segments(path: &[u8]) -> Vec<&[u8]> {
    path.split(|&b| b == 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_envoy() {
        assert_eq!(PropValue::from(200i64).encode(), 200i64.to_le_bytes());
        assert_eq!(PropValue::from(7u64).encode(), 7u64.to_le_bytes());
        assert_eq!(PropValue::from(true).encode(), vec![1]);
        assert_eq!(PropValue::from("HTTP/1.1").encode(), b"HTTP/1.1");
        let map = PropValue::Map(vec![("a".into(), PropValue::from("1"))]);
        assert_eq!(map.encode(), super::super::pairs::encode(&[("a", "1")]));
    }

    #[test]
    fn nested_paths() {
        let mut t = PropertyTree::default();
        t.set_dotted("xds.node.metadata.NAMESPACE", "shop".into());
        t.set_dotted("xds.listener_direction", 1i64.into());
        assert_eq!(
            t.get(&segments(b"xds\0node\0metadata\0NAMESPACE")),
            Some(&PropValue::from("shop"))
        );
        assert_eq!(
            t.get(&segments(b"xds\0listener_direction")),
            Some(&PropValue::Int(1))
        );
        assert_eq!(t.get(&segments(b"xds\0listener_direction\0x")), None);
        assert_eq!(t.get(&segments(b"nope")), None);
        let mut over = PropertyTree::default();
        over.set_dotted("xds.listener_direction", 2i64.into());
        t.merge(&over);
        assert_eq!(
            t.get(&segments(b"xds\0listener_direction")),
            Some(&PropValue::Int(2))
        );
        assert!(t
            .get(&segments(b"xds\0node\0metadata\0NAMESPACE"))
            .is_some());
    }
}
