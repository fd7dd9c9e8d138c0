//! Configuration sections are JSON objects, and only objects.
//!
//! serde's derived `Deserialize` for a struct also accepts a sequence, filling the fields by
//! position, so `{"collector": ["otel"]}` would quietly mean `{"collector": {"cluster": "otel"}}`
//! and `"metrics": [true]` would turn metrics on. [`object_section!`] gives a struct a
//! `Deserialize` that accepts a map and refuses every other shape with an error naming it
//! (`metrics: must be an object, got an array`); the field comes from the path serde tracks.
//!
//! Usage, on every struct the configuration reaches:
//!
//! ```ignore
//! #[derive(Deserialize)]
//! #[serde(remote = "Self", deny_unknown_fields)] // the derive becomes an inherent fn ...
//! pub struct Retry { /* ... */ }
//! object_section!(Retry); // ... which the trait impl calls with the object's entries.
//! ```

use core::fmt;
use core::marker::PhantomData;

use serde::de::{self, MapAccess, Visitor};

/// A struct whose derived deserializer (made inherent by `#[serde(remote = "Self")]`) reads
/// its fields from a map. Implemented by [`object_section!`].
pub trait FromObject: Sized {
    /// Reads the struct from the entries of a JSON object.
    ///
    /// # Errors
    /// The derived deserializer's errors (unknown field, wrong field type, ...).
    fn from_object<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// Deserializes `T` from an object; any other JSON value is an error that names its shape.
///
/// # Errors
/// `must be an object, got an array` (or `got 5`, `got "x"`, `got true`, `got null`), or
/// `T`'s own errors.
pub fn deserialize<'de, D: de::Deserializer<'de>, T: FromObject>(d: D) -> Result<T, D::Error> {
    // `deserialize_any`: the configuration is JSON, which says what each value is.
    d.deserialize_any(ObjectOnly(PhantomData))
}

struct ObjectOnly<T>(PhantomData<T>);

impl<T> ObjectOnly<T> {
    fn refuse<E: de::Error>(got: fmt::Arguments<'_>) -> Result<T, E> {
        Err(E::custom(format_args!("must be an object, got {got}")))
    }
}

impl<'de, T: FromObject> Visitor<'de> for ObjectOnly<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_object(map)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<T, A::Error> {
        Self::refuse(format_args!("an array"))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        Self::refuse(format_args!("{v}"))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Self::refuse(format_args!("{v}"))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Self::refuse(format_args!("{v}"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        Self::refuse(format_args!("{v}"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Self::refuse(format_args!("{v:?}"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Self::refuse(format_args!("null"))
    }
}

/// Gives a struct declared with `#[serde(remote = "Self")]` a `Deserialize` that accepts only
/// a JSON object (see the module docs).
macro_rules! object_section {
    ($t:ty) => {
        impl $crate::config::section::FromObject for $t {
            fn from_object<'de, A: ::serde::de::MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
                // The inherent function the derive made: `remote = "Self"`.
                <$t>::deserialize(::serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $t {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::config::section::deserialize(d)
            }
        }
    };
}
pub(crate) use object_section;

/// How a JSON value that should have been an object is named in an error: `an array`, or
/// the value itself (`5`, `"x"`, `true`, `null`), as [`deserialize`] names it. For adapters
/// that read the configuration as a `serde_json::Value` (linkerd-bridge).
pub fn shape(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Array(_) => "an array".to_string(),
        serde_json::Value::Object(_) => "an object".to_string(),
        other => other.to_string(),
    }
}
