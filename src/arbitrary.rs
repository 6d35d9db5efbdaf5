//! Test-only generators of hostile input for the property tests of the parsers that take
//! outside bytes: JSON-RPC-shaped values, with the words the parsers look for mixed in.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Words the parsers react to, so generated messages reach their interesting branches.
const WORDS: [&str; 16] = [
    "jsonrpc",
    "2.0",
    "id",
    "method",
    "params",
    "result",
    "initialize",
    "tools/list",
    "tools/call",
    "tasks/get",
    "tasks/result",
    "task",
    "protocolVersion",
    "2025-11-25",
    "capabilities",
    "_meta",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(WORDS.to_vec()).prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

/// Any JSON value, nested a few levels, biased towards JSON-RPC's own keys and methods.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::vec((text(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A JSON-RPC-looking message: an object with some of `jsonrpc`, `id`, `method`, `params`,
/// `result`, each with any value.
pub fn json_rpc_message() -> impl Strategy<Value = Value> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["jsonrpc", "id", "method", "params", "result", "error"]),
            prop_oneof![
                2 => text().prop_map(Value::from),
                1 => any::<i64>().prop_map(Value::from),
                2 => json_value(),
            ],
        ),
        0..6,
    )
    .prop_map(|pairs| {
        Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<Map<_, _>>(),
        )
    })
}
