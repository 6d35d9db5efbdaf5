//! Arguments and results as stored in a record: secrets masked (the values of fields named like
//! secrets, and keys of a well-known shape inside any text: `crate::secrets`), size capped.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// Largest arguments text kept in a record.
pub const MAX_ARGUMENTS_CHARS: usize = 16 * 1024;
/// Largest result text kept in a record.
pub const MAX_RESULT_CHARS: usize = 4 * 1024 * 1024;

/// Replaces the values of secret-looking fields with "[redacted]", at any depth.
pub fn redact(value: &Value) -> Value {
    // Serializing a `Value` into a `Value` cannot fail.
    serde_json::to_value(Redacted(value)).unwrap_or_default()
}

/// A call's arguments as a record keeps them: JSON with secret-looking fields' values replaced
/// by "[redacted]", written straight from the arguments (no redacted copy is built: every call
/// comes here).
pub fn arguments_text(arguments: &Map<String, Value>) -> String {
    serde_json::to_string(&RedactedMap(arguments)).unwrap_or_default()
}

/// The masking itself: the value serialized with secret-looking fields' values replaced.
struct Redacted<'a>(&'a Value);

struct RedactedMap<'a>(&'a Map<String, Value>);

impl Serialize for Redacted<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => RedactedMap(map).serialize(serializer),
            Value::Array(items) => serializer.collect_seq(items.iter().map(Redacted)),
            // A key pasted into a prompt is kept out of the record too (in one pass of the
            // text per key format: a prompt may be 16 MiB).
            Value::String(text) => serializer.serialize_str(&crate::secrets::mask_keys(text)),
            other => other.serialize(serializer),
        }
    }
}

impl Serialize for RedactedMap<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            if crate::secrets::is_secret_name(name) {
                map.serialize_entry(name, "[redacted]")?;
            } else {
                map.serialize_entry(name, &Redacted(value))?;
            }
        }
        map.end()
    }
}

/// A result or reasoning text as a record keeps it: keys of a well-known shape masked, at most
/// `max` characters.
pub fn stored(text: String, max: usize) -> String {
    // Cut first: what is not kept is not looked at.
    let text = cap(text, max);
    match crate::secrets::mask_keys(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(masked) => masked,
    }
}

/// Cuts `text` to at most `max` characters, saying how much was cut.
pub fn cap(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… [{} more bytes not kept]",
        &text[..end],
        text.len() - end
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_at_any_depth() {
        let v = json!({"prompt": "hi", "api_key": "sk-1", "nested": [{"Authorization": "Bearer x"}], "max_tokens": 5});
        let r = redact(&v);
        assert_eq!(r["api_key"], "[redacted]");
        assert_eq!(r["nested"][0]["Authorization"], "[redacted]");
        assert_eq!(r["prompt"], "hi");
        assert_eq!(r["max_tokens"], 5);
    }

    #[test]
    fn a_record_s_arguments_text_is_the_redacted_arguments() {
        let v = json!({"prompt": "hi \"there\"", "api_key": "sk-1", "nested": [{"Authorization": "Bearer x", "n": [1, null, true]}], "token": {"inner": "secret"}});
        let text = arguments_text(v.as_object().unwrap());
        assert_eq!(text, redact(&v).to_string());
        assert!(
            !text.contains("sk-1") && !text.contains("Bearer x") && !text.contains("secret"),
            "{text}"
        );
    }

    #[test]
    fn long_text_is_capped_on_a_char_boundary() {
        let s = "é".repeat(100);
        let c = cap(s, 11);
        assert!(c.starts_with("ééééé…"), "{c}");
        assert!(c.contains("more bytes not kept"));
    }
}
