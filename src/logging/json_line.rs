//! The JSON log line, made in a string of its own and handed to the writer whole.
//!
//! The shape is tracing-subscriber's JSON format (timestamp, level, the event's fields, target,
//! and the current span's fields with its name), without its cost: that formatter renders a
//! span's fields to JSON text once (through a map of JSON values), then parses that text back
//! for every line in the span; here a span's fields are rendered once as object members, which
//! each line copies.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as JSON lines; spans' fields must be rendered by [`JsonMembers`].
pub struct JsonLine;

/// Renders a span's fields as the members of a JSON object (`"call_id":"…","tool":"chat"`),
/// once, when the span is made (and as fields are recorded on it later): each line in the span
/// copies them as they are. A field recorded again is added again (readers of JSON take the
/// last); exai records no span field twice.
pub struct JsonMembers;

impl<'writer> FormatFields<'writer> for JsonMembers {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        members(&mut writer, true, fields).map(drop)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        members(&mut current.as_writer(), first, fields).map(drop)
    }
}

/// Writes `fields` as JSON object members, after members already written unless `first`; the
/// target a record from the `log` crate names in a field, if any.
fn members<W: fmt::Write>(
    out: &mut W,
    first: bool,
    fields: impl RecordFields,
) -> Result<Option<String>, fmt::Error> {
    let mut visitor = Fields {
        out,
        first,
        result: Ok(()),
        log_target: None,
    };
    fields.record(&mut visitor);
    visitor.result.map(|()| visitor.log_target)
}

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Each piece written through the `Writer` is a call through a `dyn fmt::Write`, and a
        // line has dozens.
        let mut line = String::with_capacity(LINE_CAPACITY);
        let meta = event.metadata();
        line.push_str("{\"timestamp\":\"");
        timestamp(&mut line)?;
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push_str("\",\"fields\":{");
        let log_target = members(&mut line, true, event)?;
        line.push_str("},\"target\":");
        // A record from the `log` crate names its own target in a field.
        string(&mut line, log_target.as_deref().unwrap_or(meta.target()))?;
        if let Some(span) = ctx.parent_span() {
            let extensions = span.extensions();
            // `JsonMembers` rendered the span's fields as JSON object members: they go in as
            // they are.
            let members = extensions
                .get::<FormattedFields<N>>()
                .map_or("", |rendered| rendered.fields.as_str());
            line.push_str(",\"span\":{");
            if !members.is_empty() {
                line.push_str(members);
                line.push(',');
            }
            line.push_str("\"name\":");
            string(&mut line, span.name())?;
            line.push('}');
        }
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// Room for a usual line (a call's lines are 270 to 440 bytes), so that few grow.
const LINE_CAPACITY: usize = 512;

/// Writes an event's fields as JSON object members.
struct Fields<'a, W: fmt::Write> {
    out: &'a mut W,
    first: bool,
    result: fmt::Result,
    log_target: Option<String>,
}

impl<W: fmt::Write> Fields<'_, W> {
    /// An integer field, written by `itoa`: `write!` took three times the instructions, and a
    /// line has several.
    fn put_integer(&mut self, field: &Field, value: impl itoa::Integer) {
        self.put(field, |out| {
            out.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn put(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        // The `log` bridge's bookkeeping (module, file, line) is not part of the event.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let separator = if self.first { "" } else { "," };
        self.first = false;
        self.result = self
            .out
            .write_str(separator)
            .and_then(|()| string(self.out, field.name()))
            .and_then(|()| self.out.write_char(':'))
            .and_then(|()| value(self.out));
    }
}

impl<W: fmt::Write> Visit for Fields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "log.target" {
            self.log_target = Some(value.to_string());
            return;
        }
        self.put(field, |out| string(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value}")?;
            out.write_char('"')
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put_integer(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put_integer(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity.
        self.put(field, |out| {
            if value.is_finite() {
                write!(out, "{value}")
            } else {
                out.write_str("null")
            }
        });
    }
}

/// Now, as tracing-subscriber's JSON lines have it (RFC 3339 in UTC, to the microsecond):
/// the date and time to the second are rendered once a second on each thread, the microseconds
/// are six digits (rendering the whole date cost more than the rest of the line).
fn timestamp(out: &mut impl fmt::Write) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since_epoch.as_secs();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != seconds {
            text.clear();
            let at = i64::try_from(seconds)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .unwrap_or_default();
            write!(text, "{}", at.format("%Y-%m-%dT%H:%M:%S"))?;
            *second = seconds;
        }
        out.write_str(text)
    })?;
    let mut fraction = *b".000000Z";
    let mut micros = since_epoch.subsec_micros();
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.write_str(std::str::from_utf8(&fraction).map_err(|_| fmt::Error)?)
}

/// `text` as a JSON string.
fn string(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(text)?;
    out.write_char('"')
}

/// Writes what it is given escaped for the inside of a JSON string.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Every byte JSON escapes is ASCII, and no byte of a multi-byte character is, so each
        // split falls between characters (and no character is decoded). Eight bytes are passed
        // at once where none of them needs it, as in most of a line; the others one by one.
        let bytes = text.as_bytes();
        let mut clean = 0;
        let mut at = 0;
        while at < bytes.len() {
            if let Some(&eight) = bytes[at..].first_chunk::<8>()
                && !needs_escaping(u64::from_le_bytes(eight))
            {
                at += 8;
                continue;
            }
            let end = (at + 8).min(bytes.len());
            for (i, &b) in bytes.iter().enumerate().take(end).skip(at) {
                let escape = ESCAPES[usize::from(b)];
                if escape == 0 {
                    continue;
                }
                self.0.write_str(&text[clean..i])?;
                match escape {
                    b'u' => write!(self.0, "\\u{b:04x}")?,
                    letter => {
                        self.0.write_char('\\')?;
                        self.0.write_char(char::from(letter))?;
                    }
                }
                clean = i + 1;
            }
            at = end;
        }
        self.0.write_str(&text[clean..])
    }
}

/// Whether any of the eight bytes in `word` is one JSON escapes: a control byte, `"` or `\`.
/// (A borrow that runs on into the next byte starts only at a byte that is one, so the answer
/// for the word is exact, if not which byte it is.)
fn needs_escaping(word: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // A byte below `n` (n <= 0x80) borrows into its high bit when `n` is taken from it.
    let below = |n: u64| word.wrapping_sub(ONES * n) & !word & HIGH;
    // A byte equal to `b` is a zero byte once `b` is xor-ed out.
    let equal = |b: u64| {
        let x = word ^ (ONES * b);
        x.wrapping_sub(ONES) & !x & HIGH
    };
    (below(0x20) | equal(u64::from(b'"')) | equal(u64::from(b'\\'))) != 0
}

/// How each byte is written inside a JSON string: 0 as itself, `u` as `\u00XX`, any other mark
/// after a backslash (`\n`, `\"`).
const ESCAPES: [u8; 256] = {
    let mut escapes = [0u8; 256];
    let mut control = 0;
    while control < 0x20 {
        escapes[control] = b'u';
        control += 1;
    }
    escapes[b'\n' as usize] = b'n';
    escapes[b'\r' as usize] = b'r';
    escapes[b'\t' as usize] = b't';
    escapes[b'"' as usize] = b'"';
    escapes[b'\\' as usize] = b'\\';
    escapes
};

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    /// The lines written, for the test to read.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(emit: impl FnOnce()) -> Vec<serde_json::Value> {
        let lines = Lines::default();
        let writer = lines.clone();
        let layer = tracing_subscriber::fmt::layer()
            .fmt_fields(super::JsonMembers)
            .event_format(super::JsonLine)
            .with_writer(move || writer.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    #[test]
    fn a_line_is_json_with_the_events_fields_target_and_span() {
        let tricky = "quote \" backslash \\ newline \n tab \t bell \u{7} é ✓";
        let lines = logged(|| {
            let span = tracing::info_span!(
                "call",
                call_id = "c-1",
                tool = "chat",
                model = tracing::field::Empty
            );
            // Recorded after the span was made: its members grow.
            span.record("model", "m \"1\"");
            let _in = span.enter();
            tracing::info!(tokens = 42u64, delta = -3i64, ok = true, ratio = 0.5, text = tricky,
                shown = %"as displayed", "provider answer {}", "complete");
            tracing::warn!(ratio = f64::NAN, "no span fields lost");
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], module_path!());
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
        let fields = &line["fields"];
        assert_eq!(fields["message"], "provider answer complete");
        assert_eq!(
            (
                &fields["tokens"],
                &fields["delta"],
                &fields["ok"],
                &fields["ratio"]
            ),
            (&42.into(), &(-3).into(), &true.into(), &0.5.into())
        );
        assert_eq!(fields["text"], tricky);
        assert_eq!(fields["shown"], "as displayed");
        assert_eq!(
            line["span"],
            serde_json::json!({"call_id": "c-1", "tool": "chat", "model": "m \"1\"", "name": "call"})
        );
        assert_eq!(lines[1]["fields"]["ratio"], serde_json::Value::Null);
    }

    /// A plain escaper, character by character, to compare with.
    fn escaped_byte_by_byte(text: &str) -> String {
        let mut out = String::new();
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                c => out.push(c),
            }
        }
        out
    }

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        std::fmt::Write::write_str(&mut super::Escaped(&mut out), text).unwrap();
        out
    }

    #[test]
    fn text_is_escaped_as_json_wherever_its_marks_fall_in_a_word() {
        // Each mark at each place in a word of eight, and after multi-byte characters.
        for mark in [
            "\"", "\\", "\n", "\u{1}", "\u{1f}", "\t", "\r", "é", "✓", "\u{7f}", " ",
        ] {
            for at in 0..17 {
                let text = format!("{}{mark}{}", "a".repeat(at), "b".repeat(17 - at));
                assert_eq!(escaped(&text), escaped_byte_by_byte(&text), "{text:?}");
                let text = format!("é{}{mark}✓", "a".repeat(at));
                assert_eq!(escaped(&text), escaped_byte_by_byte(&text), "{text:?}");
            }
        }
        assert_eq!(escaped(""), "");
        let text = "a line with nothing to escape, longer than a word";
        assert_eq!(escaped(text), text);
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_escaped_as_byte_by_byte(text in "(?s).{0,80}") {
            proptest::prop_assert_eq!(escaped(&text), escaped_byte_by_byte(&text));
            let json = format!("\"{}\"", escaped(&text));
            proptest::prop_assert_eq!(serde_json::from_str::<String>(&json).unwrap(), text);
        }
    }

    #[test]
    fn a_timestamp_is_rfc3339_in_utc_to_the_microsecond() {
        for _ in 0..3 {
            let before = chrono::Utc::now();
            let mut text = String::new();
            super::timestamp(&mut text).unwrap();
            let after = chrono::Utc::now();
            let at = chrono::DateTime::parse_from_rfc3339(&text).unwrap();
            assert!(before.timestamp_micros() <= at.timestamp_micros(), "{text}");
            assert!(at.timestamp_micros() <= after.timestamp_micros(), "{text}");
            // `2026-12-07T03:10:40.243857Z`
            assert_eq!(text.len(), 27, "{text}");
            assert!(text.ends_with('Z'), "{text}");
        }
    }

    #[test]
    fn a_span_without_fields_is_named_alone() {
        let lines = logged(|| {
            let span = tracing::info_span!("shutdown");
            let _in = span.enter();
            tracing::info!("stopping");
        });
        assert_eq!(lines[0]["span"], serde_json::json!({"name": "shutdown"}));
    }

    #[test]
    fn a_line_outside_any_span_has_no_span() {
        let lines = logged(|| tracing::info!("exai daemon listening"));
        assert_eq!(lines[0]["fields"]["message"], "exai daemon listening");
        assert!(lines[0].get("span").is_none(), "{}", lines[0]);
    }
}
