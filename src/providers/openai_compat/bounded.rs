//! JSON arrays in a provider's answer read only as far as exai uses them: the items past a
//! bound are parsed past, never built, so a hostile body cannot turn its bytes into structures
//! many times their size (`{"choices":[{},{},…]}` of 16 MiB would be over a gigabyte of them).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, IgnoredAny, SeqAccess, Visitor};

/// The first `N` items of a JSON array (`null` or a missing field is none).
pub(super) struct FirstOf<T, const N: usize>(pub(super) Vec<T>);

impl<T, const N: usize> Default for FirstOf<T, N> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T, const N: usize> FirstOf<T, N> {
    pub(super) fn into_vec(self) -> Vec<T> {
        self.0
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for FirstOf<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Items<T, const N: usize>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Items<T, N> {
            type Value = FirstOf<T, N>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array or null")
            }

            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(FirstOf::default())
            }

            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(FirstOf::default())
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_seq(self)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
                let mut kept = Vec::with_capacity(items.size_hint().unwrap_or(0).min(N));
                while kept.len() < N {
                    match items.next_element()? {
                        Some(item) => kept.push(item),
                        None => return Ok(FirstOf(kept)),
                    }
                }
                while items.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FirstOf(kept))
            }
        }

        d.deserialize_option(Items::<T, N>(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        items: FirstOf<u32, 3>,
    }

    fn items(json: &str) -> Vec<u32> {
        serde_json::from_str::<Body>(json).unwrap().items.into_vec()
    }

    #[test]
    fn an_array_keeps_its_first_items_and_parses_past_the_rest() {
        assert_eq!(items(r#"{"items":[1,2]}"#), [1, 2]);
        assert_eq!(items(r#"{"items":[1,2,3,4,{"x":[5]},"six"]}"#), [1, 2, 3]);
        assert_eq!(items(r#"{"items":null}"#), Vec::<u32>::new());
        assert_eq!(items(r#"{}"#), Vec::<u32>::new());
        // What is kept is still checked; what is passed must still be JSON.
        assert!(serde_json::from_str::<Body>(r#"{"items":["one"]}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"items":[1,2,3,4,}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"items":7}"#).is_err());
    }

    #[test]
    fn a_flood_of_items_builds_only_the_first() {
        let flood = format!(r#"{{"items":[{}0]}}"#, "7,".repeat(1_000_000));
        assert_eq!(items(&flood), [7, 7, 7]);
    }
}
