//! Request bodies read from JSON objects only, never from arrays.
//!
//! Why: serde's derived impls read a struct from a sequence too, its fields
//! in order, so `"preference": [0.5]` would read as `{"cost_weight": 0.5}`,
//! a shape the API description forbids. Every request body's structs (in
//! the gateway and in experiment specs) go through [`ObjectOnly`].

use serde::de::Visitor;
use serde::{Deserialize, Deserializer};

/// A deserializer that reads only maps (JSON objects, TOML tables). serde's
/// derived impls read a struct, and an internally tagged enum, from a
/// sequence too, its fields in order: `"preference": [0.5]` would read as
/// `{"cost_weight": 0.5}`. A request body's structs go through this, with
/// `#[serde(remote = "Self")]` and [`objects_only!`](crate::objects_only).
pub struct ObjectOnly<D>(pub D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> std::result::Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// `T` read from a map only (see [`ObjectOnly`]): for a field of a type
/// defined elsewhere, `#[serde(deserialize_with = "object")]`.
pub fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> std::result::Result<T, D::Error> {
    T::deserialize(ObjectOnly(d))
}

/// `Deserialize` for structs derived with `#[serde(remote = "Self")]` (the
/// derive then only writes an inherent `deserialize`), reading them from
/// maps only (see [`ObjectOnly`]).
#[macro_export]
macro_rules! objects_only {
    ($($t:ty),+ $(,)?) => {$(
        impl<'de> ::serde::Deserialize<'de> for $t {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> ::std::result::Result<Self, D::Error> {
                <$t>::deserialize($crate::objects::ObjectOnly(d))
            }
        }
    )+};
}

/// `Serialize` for types that derive it beside `#[serde(remote = "Self")]`
/// (needed by [`objects_only!`](crate::objects_only)): the derive then
/// writes an inherent `serialize` only, which this makes the trait's.
#[macro_export]
macro_rules! serialize_derived {
    ($($t:ty),+ $(,)?) => {$(
        impl ::serde::Serialize for $t {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                <$t>::serialize(self, s)
            }
        }
    )+};
}
