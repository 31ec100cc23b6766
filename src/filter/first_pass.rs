//! A first pass over a body that builds nothing: most bodies need no change, and this tells so
//! without allocating. Only a body it has a doubt about is parsed into a `serde_json::Value`
//! and walked by [`check`](super::check), which decides.
//!
//! The pass is conservative: it answers "clean" only where the walk would leave the body
//! unchanged and accept it; anything else (a null in a checked object, a value that would be
//! coerced, a wrong type, a duplicate known field, a missing required field, an empty `{}` part)
//! is a doubt, and the walk then says what exactly.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::schema::{Obj, Req, Shape, Ty};

/// What the first pass found in a body that needs nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Clean {
    /// The top-level `model` string, for OpenAI shapes (where it names the model).
    pub(crate) model: Option<String>,
}

/// `Some` when `body` is JSON that the walk would forward unchanged; `None` when in doubt
/// (including bodies that are not JSON).
pub(crate) fn first_pass(body: &[u8], shape: Shape) -> Option<Clean> {
    crate::buffer::counts::parse();
    let mut de = serde_json::Deserializer::from_slice(body);
    let seed = ObjectSeed {
        schema: shape.schema(),
        model: shape.is_openai(),
    };
    let found = seed.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(Clean { model: found.model })
}

/// Every early way out: the walk decides.
fn doubt<E: de::Error>() -> E {
    E::custom("needs the full check")
}

/// What an object of a schema held, as far as its container needs to know.
struct ObjectSeen {
    /// Keys in the object (an empty `{}` part is dropped by the walk).
    keys: usize,
    /// The `model` string, when asked for.
    model: Option<String>,
}

/// An object of a known shape.
#[derive(Clone, Copy)]
struct ObjectSeed {
    schema: &'static Obj,
    /// Keep the `model` string (the top level of an OpenAI body).
    model: bool,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed {
    type Value = ObjectSeen;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<ObjectSeen, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed {
    type Value = ObjectSeen;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ObjectSeen, A::Error> {
        let fields = self.schema.fields;
        let mut seen: u64 = 0;
        let mut keys = 0;
        let mut model = None;
        while let Some(key) = map.next_key_seed(KeySeed {
            schema: self.schema,
        })? {
            keys += 1;
            match key {
                Key::Field(i) => {
                    let bit = 1u64 << i;
                    if seen & bit != 0 {
                        // A duplicate (or name and alias both): the walk sees only one of them.
                        return Err(doubt());
                    }
                    seen |= bit;
                    let ty = fields[i].ty;
                    if self.model && fields[i].name == "model" && matches!(ty, Ty::Str) {
                        model = Some(map.next_value::<String>()?);
                    } else {
                        map.next_value_seed(ValueSeed {
                            ty,
                            req: fields[i].req,
                            in_array: false,
                        })?;
                    }
                }
                // An unknown field is forwarded as it is, unless it is null (the walk drops it).
                Key::Other => map.next_value_seed(NotNull)?,
            }
        }
        let present = |i: usize| seen & (1u64 << i) != 0;
        let missing = fields
            .iter()
            .enumerate()
            .any(|(i, f)| f.req != Req::Optional && !present(i));
        let any_of_met = self.schema.any_of.is_empty()
            || fields
                .iter()
                .enumerate()
                .any(|(i, f)| self.schema.any_of.contains(&f.name) && present(i));
        if missing || !any_of_met {
            return Err(doubt());
        }
        Ok(ObjectSeen { keys, model })
    }
}

/// An object key: the index of the known field it names (by name or alias), or none.
enum Key {
    Field(usize),
    Other,
}

struct KeySeed {
    schema: &'static Obj,
}

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        let found = self
            .schema
            .fields
            .iter()
            .position(|f| f.name == key || f.alias == Some(key));
        match found {
            // The set of seen fields is a 64-bit mask.
            Some(i) if i >= 64 => Err(doubt()),
            Some(i) => Ok(Key::Field(i)),
            None => Ok(Key::Other),
        }
    }
}

/// Any value but `null`, skipped.
struct NotNull;

impl<'de> DeserializeSeed<'de> for NotNull {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NotNull {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value other than null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(doubt())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(doubt())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// A value of a known type, accepted only as the walk would accept it without a change.
#[derive(Clone, Copy)]
struct ValueSeed {
    ty: Ty,
    /// For arrays: whether they must not be empty.
    req: Req,
    /// An array item (where a null `Opaque` item is kept) rather than an object field (where
    /// any null is dropped).
    in_array: bool,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        match self.ty {
            Ty::Opaque if self.in_array => IgnoredAny::deserialize(deserializer).map(|_| ()),
            Ty::Opaque => NotNull.deserialize(deserializer),
            _ => deserializer.deserialize_any(self),
        }
    }
}

impl ValueSeed {
    fn items(self, item: &'static Ty) -> ValueSeed {
        ValueSeed {
            ty: *item,
            req: Req::Optional,
            in_array: true,
        }
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value of the expected type")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        match self.ty {
            Ty::Bool => Ok(()),
            _ => Err(doubt()),
        }
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        match self.ty {
            Ty::Num | Ty::Int => Ok(()),
            _ => Err(doubt()),
        }
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        match self.ty {
            Ty::Num | Ty::Int => Ok(()),
            _ => Err(doubt()),
        }
    }

    // `Int` takes `100.0` only by rewriting it to `100`.
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        match self.ty {
            Ty::Num => Ok(()),
            _ => Err(doubt()),
        }
    }

    // A string where a number or a list is expected is coerced: a change.
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        match self.ty {
            Ty::Str | Ty::StrOrArr(_) | Ty::StrOrObj(_) => Ok(()),
            _ => Err(doubt()),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        match self.ty {
            Ty::Obj(schema) | Ty::StrOrObj(schema) => {
                let seed = ObjectSeed {
                    schema,
                    model: false,
                };
                seed.visit_map(map).map(|_| ())
            }
            _ => Err(doubt()),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let item = match self.ty {
            Ty::StrList => &Ty::Str,
            Ty::Arr(item) | Ty::StrOrArr(item) => item,
            _ => return Err(doubt()),
        };
        let mut count = 0;
        match item {
            // Items that are `{}` are dropped from arrays of such objects.
            Ty::Obj(schema) if schema.drop_if_empty => {
                let seed = ObjectSeed {
                    schema,
                    model: false,
                };
                while let Some(seen) = seq.next_element_seed(seed)? {
                    if seen.keys == 0 {
                        return Err(doubt());
                    }
                    count += 1;
                }
            }
            _ => {
                while seq.next_element_seed(self.items(item))?.is_some() {
                    count += 1;
                }
            }
        }
        if self.req == Req::NonEmpty && count == 0 {
            return Err(doubt());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
