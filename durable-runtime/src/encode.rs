//! Never write what cannot be read back: the encoding of states for the journal, and the
//! reading of them.
//!
//! Every state the engine journals goes through [`to_text`] (or [`to_value`] on its way to a
//! step), which serializes it in one pass and refuses, with a clear message, what JSON or the
//! reader cannot carry back: floats that are NaN or infinite (JSON has no such numbers;
//! serde_json would silently write `null`) and arrays or objects nested more than
//! [`MAX_DEPTH`] levels deep (serde_json refuses to parse past 127 levels, and walking a
//! deeper value recursively can overflow the stack). Refusing happens during the one
//! serialization that is done anyway, and stops at the limit, so the check costs no extra pass
//! and the engine never recurses deeper than the limit.
//!
//! Reading goes through [`decode`], which measures the text's nesting without recursion before
//! serde_json sees it, so a stored value written by anything else (an older version, a hand
//! edit) gives a clear error on its run instead of a crash.

use std::any::Any;
use std::cell::Cell;

use serde::ser::{self, Serialize, Serializer};
use serde_json::Value;

use crate::data::{Data, MAX_DEPTH};

/// The deepest nesting [`decode`] hands to serde_json: serde_json itself refuses deeper text.
/// Values this version writes stay within [`MAX_DEPTH`]; the margin keeps older journals
/// (which were not checked on write) readable.
pub(crate) const READ_DEPTH: usize = 127;

/// Encodes `value` as journal text, refusing non-finite floats and nesting past [`MAX_DEPTH`].
pub(crate) fn to_text<T: Serialize + ?Sized>(value: &T) -> Result<String, String> {
    serde_json::to_string(&Guarded { value, depth: 0 }).map_err(|e| e.to_string())
}

/// Converts `value` to JSON, refusing non-finite floats and nesting past [`MAX_DEPTH`].
pub(crate) fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, serde_json::Error> {
    serde_json::to_value(Guarded { value, depth: 0 })
}

thread_local! {
    /// Set when the last serialization through a [`Guard`] on this thread stopped at
    /// [`MAX_DEPTH`] (see [`refused_for_depth`]).
    static TOO_DEEP: Cell<bool> = const { Cell::new(false) };
}

/// Runs `encode` (one serialization through a [`Guard`]) and tells whether it stopped at
/// [`MAX_DEPTH`]: then the value may nest far deeper still, too deep to drop recursively.
fn refused_for_depth<R>(encode: impl FnOnce() -> R) -> (R, bool) {
    TOO_DEEP.with(|flag| flag.set(false));
    let out = encode();
    (out, TOO_DEEP.with(|flag| flag.replace(false)))
}

/// [`to_value`] of a value the caller hands over (a state, an argument of
/// [`Data::assign`](crate::Data::assign)), which it disposes of without recursing through it
/// when it was refused for its nesting (see [`dispose_deep`]).
pub(crate) fn into_value<T: Serialize>(value: T) -> Result<Value, serde_json::Error> {
    let (json, too_deep) = refused_for_depth(|| to_value(&value));
    if too_deep {
        dispose_deep(value);
    }
    json
}

/// [`to_text`] of a value the caller hands over (a signal's or a callback's payload), disposed
/// of as by [`into_value`].
pub(crate) fn into_text<T: Serialize>(value: T) -> Result<String, String> {
    let (text, too_deep) = refused_for_depth(|| to_text(&value));
    if too_deep {
        dispose_deep(value);
    }
    text
}

/// [`into_value`] for a `'static` value: JSON ([`Value`] or [`Data`]) refused for its nesting
/// is dismantled without recursion ([`drop_flat`]) instead of being forgotten.
pub(crate) fn into_value_static<T: Serialize + 'static>(
    value: T,
) -> Result<Value, serde_json::Error> {
    let (json, too_deep) = refused_for_depth(|| to_value(&value));
    if too_deep {
        if let Err(other) = drop_flat(value) {
            dispose_deep(other);
        }
    }
    json
}

/// [`to_text`] of a value the caller hands over and takes back when it encodes (an operation's
/// output); one refused for its nesting is disposed of as by [`into_value_static`].
pub(crate) fn to_text_or_dispose<T: Serialize + 'static>(value: T) -> Result<(T, String), String> {
    let (text, too_deep) = refused_for_depth(|| to_text(&value));
    match text {
        Ok(text) => Ok((value, text)),
        Err(error) => {
            if too_deep {
                if let Err(other) = drop_flat(value) {
                    dispose_deep(other);
                }
            }
            Err(error)
        }
    }
}

/// Gets rid of a value refused for nesting past [`MAX_DEPTH`] without dropping it: Rust drops
/// nested values recursively (serde_json's [`Value`] included), so a value nested 100,000
/// levels deep would overflow the thread's stack and abort the process. A value of a type not
/// known here cannot be taken apart without `unsafe` (a generic argument may borrow, so it
/// cannot be downcast), so it is forgotten: its memory stays allocated, once per refusal (which
/// fails its step for good). A reference handed over (`assign("k", &value)`) leaks nothing:
/// its owner drops the value.
fn dispose_deep<T>(value: T) {
    std::mem::forget(value);
}

/// Drops `value` without recursion when it is JSON ([`Value`] or [`Data`]): a refused state may
/// nest far deeper than a recursive drop can go on a thread's stack. Any other type is handed
/// back, for the caller to drop or dispose of.
pub(crate) fn drop_flat<T: 'static>(value: T) -> Result<(), T> {
    let mut slot = Some(value);
    let any: &mut dyn Any = &mut slot;
    let root = if let Some(value) = any.downcast_mut::<Option<Value>>() {
        value.take()
    } else if let Some(data) = any.downcast_mut::<Option<Data>>() {
        data.take().map(|d| Value::Object(d.0))
    } else {
        return Err(slot.take().expect("still in the slot"));
    };
    if let Some(root) = root {
        dismantle(root);
    }
    Ok(())
}

/// Drops a JSON value one container at a time, so its nesting never reaches the stack.
fn dismantle(root: Value) {
    let mut stack = vec![root];
    while let Some(value) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(fields) => stack.extend(fields.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// Parses journal text, refusing (without recursion) text nested deeper than serde_json reads.
/// The error reads after "its stored input", "its journaled output" and the like.
pub(crate) fn decode(text: &str) -> Result<Value, String> {
    readable(text)?;
    serde_json::from_str(text).map_err(|e| format!("is not valid JSON: {e}"))
}

/// Refuses (without recursion) text nested deeper than serde_json reads, before it parses it.
pub(crate) fn readable(text: &str) -> Result<(), String> {
    match too_deep(text, READ_DEPTH) {
        Some(depth) => Err(format!(
            "nests arrays and objects at least {depth} levels deep, more than the \
             {READ_DEPTH} that can be read back"
        )),
        None => Ok(()),
    }
}

/// The first nesting depth past `limit` in JSON `text`, if it goes past it; counted byte by
/// byte, brackets inside strings excluded.
fn too_deep(text: &str, limit: usize) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Some(depth);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

fn deeper<E: ser::Error>(depth: usize) -> Result<usize, E> {
    if depth >= MAX_DEPTH {
        TOO_DEEP.with(|flag| flag.set(true));
        Err(E::custom(format_args!(
            "it nests arrays and objects more than {MAX_DEPTH} levels deep, which could not be \
             read back from the journal (the limit is durable::data::MAX_DEPTH)"
        )))
    } else {
        Ok(depth + 1)
    }
}

fn finite<E: ser::Error>(v: f64) -> Result<(), E> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(E::custom(format_args!(
            "it holds the number {v}, which JSON cannot represent (JSON has no NaN or \
             infinity); store such a number as a string or an Option instead"
        )))
    }
}

/// A value serialized through a [`Guard`], `depth` containers down.
struct Guarded<'a, T: ?Sized> {
    value: &'a T,
    depth: usize,
}

impl<T: Serialize + ?Sized> Serialize for Guarded<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(Guard {
            inner: s,
            depth: self.depth,
        })
    }
}

/// A serializer (or compound serializer) that passes everything to `inner`, checking floats and
/// nesting on the way.
struct Guard<S> {
    inner: S,
    depth: usize,
}

impl<S> Guard<S> {
    fn wrap<'a, T: ?Sized>(&self, value: &'a T) -> Guarded<'a, T> {
        Guarded {
            value,
            depth: self.depth,
        }
    }
}

macro_rules! forward {
    ($($method:ident($ty:ty);)*) => {
        $(fn $method(self, v: $ty) -> Result<S::Ok, S::Error> {
            self.inner.$method(v)
        })*
    };
}

impl<S: Serializer> Serializer for Guard<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Guard<S::SerializeSeq>;
    type SerializeTuple = Guard<S::SerializeTuple>;
    type SerializeTupleStruct = Guard<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Guard<S::SerializeTupleVariant>;
    type SerializeMap = Guard<S::SerializeMap>;
    type SerializeStruct = Guard<S::SerializeStruct>;
    type SerializeStructVariant = Guard<S::SerializeStructVariant>;

    forward! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32);
        serialize_i64(i64); serialize_i128(i128); serialize_u8(u8); serialize_u16(u16);
        serialize_u32(u32); serialize_u64(u64); serialize_u128(u128); serialize_char(char);
        serialize_str(&str); serialize_bytes(&[u8]);
    }

    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        finite(v.into())?;
        self.inner.serialize_f32(v)
    }

    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        finite(v)?;
        self.inner.serialize_f64(v)
    }

    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_none()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        let value = self.wrap(value);
        self.inner.serialize_some(&value)
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit()
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit_struct(name)
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit_variant(name, index, variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let value = self.wrap(value);
        self.inner.serialize_newtype_struct(name, &value)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        // JSON writes it as `{"variant": value}`: one level more.
        let depth = deeper(self.depth)?;
        self.inner
            .serialize_newtype_variant(name, index, variant, &Guarded { value, depth })
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        let depth = deeper(self.depth)?;
        Ok(Guard {
            inner: self.inner.serialize_seq(len)?,
            depth,
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        let depth = deeper(self.depth)?;
        Ok(Guard {
            inner: self.inner.serialize_tuple(len)?,
            depth,
        })
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        let depth = deeper(self.depth)?;
        Ok(Guard {
            inner: self.inner.serialize_tuple_struct(name, len)?,
            depth,
        })
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        // `{"variant": [..]}`: two levels.
        let depth = deeper(deeper(self.depth)?)?;
        Ok(Guard {
            inner: self
                .inner
                .serialize_tuple_variant(name, index, variant, len)?,
            depth,
        })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        let depth = deeper(self.depth)?;
        Ok(Guard {
            inner: self.inner.serialize_map(len)?,
            depth,
        })
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        let depth = deeper(self.depth)?;
        Ok(Guard {
            inner: self.inner.serialize_struct(name, len)?,
            depth,
        })
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        // `{"variant": {..}}`: two levels.
        let depth = deeper(deeper(self.depth)?)?;
        Ok(Guard {
            inner: self
                .inner
                .serialize_struct_variant(name, index, variant, len)?,
            depth,
        })
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! compound {
    ($trait:ident, $method:ident) => {
        impl<S: ser::$trait> ser::$trait for Guard<S> {
            type Ok = S::Ok;
            type Error = S::Error;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
                let value = self.wrap(value);
                self.inner.$method(&value)
            }

            fn end(self) -> Result<S::Ok, S::Error> {
                self.inner.end()
            }
        }
    };
}

compound!(SerializeSeq, serialize_element);
compound!(SerializeTuple, serialize_element);
compound!(SerializeTupleStruct, serialize_field);
compound!(SerializeTupleVariant, serialize_field);

impl<S: ser::SerializeMap> ser::SerializeMap for Guard<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), S::Error> {
        let key = self.wrap(key);
        self.inner.serialize_key(&key)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        let value = self.wrap(value);
        self.inner.serialize_value(&value)
    }

    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), S::Error> {
        let (key, value) = (self.wrap(key), self.wrap(value));
        self.inner.serialize_entry(&key, &value)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.inner.end()
    }
}

macro_rules! fields {
    ($trait:ident) => {
        impl<S: ser::$trait> ser::$trait for Guard<S> {
            type Ok = S::Ok;
            type Error = S::Error;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), S::Error> {
                let value = self.wrap(value);
                self.inner.serialize_field(key, &value)
            }

            fn skip_field(&mut self, key: &'static str) -> Result<(), S::Error> {
                self.inner.skip_field(key)
            }

            fn end(self) -> Result<S::Ok, S::Error> {
                self.inner.end()
            }
        }
    };
}

fields!(SerializeStruct);
fields!(SerializeStructVariant);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(depth: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..depth {
            v = json!([v]);
        }
        v
    }

    #[test]
    fn text_is_what_serde_json_writes() {
        let v = json!({"a": [1, 2.5, null, "x\"y"], "b": {"c": true}});
        assert_eq!(to_text(&v).unwrap(), v.to_string());
        assert_eq!(to_value(&v).unwrap(), v);
    }

    #[test]
    fn nesting_up_to_the_limit_is_written_and_read_back() {
        let v = nested(MAX_DEPTH);
        let text = to_text(&v).unwrap();
        assert_eq!(decode(&text).unwrap(), v);
        let err = to_text(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert!(
            err.starts_with("it nests arrays and objects more than 100 levels deep"),
            "{err}"
        );
    }

    #[test]
    fn enum_variants_count_their_wrapping_object() {
        #[derive(serde::Serialize)]
        enum E {
            V(Value),
            T(Value, u8),
        }
        assert!(to_text(&E::V(nested(MAX_DEPTH - 1))).is_ok());
        assert!(to_text(&E::V(nested(MAX_DEPTH))).is_err());
        assert!(to_text(&E::T(nested(MAX_DEPTH - 2), 0)).is_ok());
        assert!(to_text(&E::T(nested(MAX_DEPTH - 1), 0)).is_err());
    }

    #[test]
    fn non_finite_floats_are_refused() {
        #[derive(serde::Serialize)]
        struct S {
            x: Vec<f64>,
            y: f32,
        }
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = to_text(&S {
                x: vec![1.0, bad],
                y: 0.0,
            })
            .unwrap_err();
            assert!(
                err.starts_with(&format!(
                    "it holds the number {bad}, which JSON cannot represent"
                )),
                "{err}"
            );
            assert!(to_value(&S {
                x: vec![],
                y: bad as f32
            })
            .is_err());
        }
        assert_eq!(
            to_text(&S {
                x: vec![1.5],
                y: -0.5
            })
            .unwrap(),
            r#"{"x":[1.5],"y":-0.5}"#
        );
    }

    #[test]
    fn values_refused_for_depth_are_never_dropped_recursively() {
        // 100,000 levels: dropping one recursively overflows a test thread's stack. Built
        // without `json!`, which copies its argument recursively.
        let deep = || {
            let mut v = json!(1);
            for _ in 0..100_000 {
                v = Value::Array(vec![v]);
            }
            v
        };
        let err = Data::new().try_assign("deep", deep()).unwrap_err();
        assert!(err.to_string().starts_with("it nests arrays"), "{err}");
        let mut data = Data::new();
        data.set("deep", deep());
        assert!(!data.contains("deep"));
        assert!(into_text(deep())
            .unwrap_err()
            .starts_with("it nests arrays"));
        assert!(crate::State::into_json(deep()).is_err());
        // A state of a type that cannot be taken apart is refused all the same.
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Holder {
            deep: Value,
        }
        assert!(crate::State::into_json(Holder { deep: deep() }).is_err());
    }

    #[test]
    fn only_values_refused_for_depth_are_kept_from_dropping() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static DROPPED: AtomicUsize = AtomicUsize::new(0);
        /// Serializes as `x`, counting its drops.
        struct Counted(f64);
        impl Serialize for Counted {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_f64(self.0)
            }
        }
        impl Drop for Counted {
            fn drop(&mut self) {
                DROPPED.fetch_add(1, Ordering::SeqCst);
            }
        }
        assert!(into_value(Counted(1.5)).is_ok());
        assert!(into_value(Counted(f64::NAN)).is_err());
        assert!(into_text(Counted(f64::INFINITY)).is_err());
        assert_eq!(
            DROPPED.load(Ordering::SeqCst),
            3,
            "shallow values are dropped"
        );
        // After a refusal for depth, the next shallow refusal is not taken for one.
        assert!(into_value(deep_vec()).is_err());
        assert!(into_value(Counted(f64::NAN)).is_err());
        assert_eq!(DROPPED.load(Ordering::SeqCst), 4);

        fn deep_vec() -> Value {
            nested(MAX_DEPTH + 1)
        }
    }

    #[test]
    fn reading_counts_brackets_outside_strings_only() {
        let text = format!("{{\"s\": \"{}\\\"[\"}}", "[".repeat(500));
        assert_eq!(decode(&text).unwrap()["s"].as_str().unwrap().len(), 502);
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let err = decode(&deep).unwrap_err();
        assert_eq!(err, "nests arrays and objects at least 128 levels deep, more than the 127 that can be read back");
        assert!(decode("[1,")
            .unwrap_err()
            .starts_with("is not valid JSON: EOF"));
        assert!(decode(&format!("{}{}", "[".repeat(120), "]".repeat(120))).is_ok());
    }
}
