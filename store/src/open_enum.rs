//! An enum field as proto3 JSON reads and writes it in etcd's gateway:
//! by name when the name is known, and as any 32-bit integer otherwise,
//! kept as it came (an open enum, as on the binary wire). The generated
//! serde code (`pbjson`, opened by `build.rs`) goes through it for every
//! enum field, so an unknown value reaches the service as it would over
//! gRPC instead of failing the request's parse.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, Error, IntoDeserializer, Visitor};
use serde::{Serialize, Serializer};

pub struct OpenEnum<T>(pub i32, PhantomData<T>);

impl<T> OpenEnum<T> {
    pub fn new(value: i32) -> OpenEnum<T> {
        OpenEnum(value, PhantomData)
    }
}

impl<'de, T: Deserialize<'de> + Into<i32>> Deserialize<'de> for OpenEnum<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Open<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Into<i32>> Visitor<'de> for Open<T> {
            type Value = OpenEnum<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an enum's name or a 32-bit integer")
            }
            fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
                i32::try_from(v)
                    .map(OpenEnum::new)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
                i32::try_from(v)
                    .map(OpenEnum::new)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
                let named = T::deserialize(v.into_deserializer())?;
                Ok(OpenEnum::new(named.into()))
            }
        }
        d.deserialize_any(Open(PhantomData))
    }
}

impl<T: TryFrom<i32> + Serialize> Serialize for OpenEnum<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match T::try_from(self.0) {
            Ok(named) => named.serialize(s),
            Err(_) => s.serialize_i32(self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::pb::etcdserverpb::{compare::CompareResult, Compare, WatchCreateRequest};

    #[test]
    fn an_enum_is_read_by_name_or_any_integer_and_written_back_as_it_came() {
        let c: Compare = serde_json::from_str(r#"{"result":"GREATER","target":7}"#).unwrap();
        assert_eq!((c.result, c.target), (CompareResult::Greater as i32, 7));
        let c: Compare = serde_json::from_str(r#"{"result":3,"target":"MOD"}"#).unwrap();
        assert_eq!((c.result, c.target), (3, 2));
        let back = serde_json::to_string(&Compare {
            result: 9,
            target: 2,
            ..Default::default()
        })
        .unwrap();
        assert!(
            back.contains(r#""result":9"#) && back.contains(r#""target":"MOD""#),
            "{back}"
        );
        let w: WatchCreateRequest = serde_json::from_str(r#"{"filters":["NODELETE",5]}"#).unwrap();
        assert_eq!(w.filters, vec![1, 5]);
        let back = serde_json::to_string(&w).unwrap();
        assert!(back.contains(r#""filters":["NODELETE",5]"#), "{back}");
        for bad in [
            r#"{"result":"BIGGER"}"#,
            r#"{"result":2147483648}"#,
            r#"{"result":-2147483649}"#,
            r#"{"result":1.5}"#,
        ] {
            assert!(serde_json::from_str::<Compare>(bad).is_err(), "{bad}");
        }
    }
}
