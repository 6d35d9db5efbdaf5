//! Server-sent events read from a provider's bytes: the `data` of each event, with a bound on
//! how much one event (its lines, and a line not yet ended) may hold, so a server that never
//! ends a line or an event cannot grow memory without bound. Linear in the bytes fed: each
//! byte is looked at once, whatever the chunking.

use std::collections::VecDeque;

/// The byte-order mark a stream may start with.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why the bytes could not be read as events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event grew past {limit} bytes without ending")]
    TooLong { limit: usize },
    #[error("a line of the stream is not valid UTF-8")]
    NotUtf8,
}

/// Splits a byte stream into events (`text/event-stream`): lines end with LF, CRLF or CR; a
/// blank line ends an event; `data:` lines are joined with LF; other fields are skipped (exai
/// needs none of them). Comment lines (`: OPENROUTER PROCESSING`) carry nothing but are
/// counted: they are a provider's keep-alives, signs of life while a model thinks.
pub struct SseDecoder {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// The data of the event being read, each line followed by LF.
    data: String,
    /// The last chunk ended with CR: an LF starting the next one ends no second line.
    after_cr: bool,
    /// A first line was read (only it may start with a byte-order mark).
    started: bool,
    /// Most bytes one event may hold, its unfinished line included.
    max_event: usize,
    /// Comment lines read so far.
    comments: u64,
}

impl SseDecoder {
    pub fn new(max_event: usize) -> Self {
        Self {
            partial: Vec::new(),
            data: String::new(),
            after_cr: false,
            started: false,
            max_event,
            comments: 0,
        }
    }

    /// How many comment lines (keep-alives) have been read so far.
    pub fn comments(&self) -> u64 {
        self.comments
    }

    /// Reads the next bytes; the data of each event they complete goes to `events`.
    pub fn feed(&mut self, chunk: &[u8], events: &mut VecDeque<String>) -> Result<(), SseError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let mut rest = chunk;
        if std::mem::take(&mut self.after_cr)
            && let Some(after) = rest.strip_prefix(b"\n")
        {
            rest = after;
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, tail) = rest.split_at(end);
            if self.partial.is_empty() {
                self.line(head, events)?;
            } else {
                self.hold(head)?;
                let line = std::mem::take(&mut self.partial);
                self.line(&line, events)?;
                // Keep the allocation for the next long line.
                self.partial = line;
                self.partial.clear();
            }
            rest = &tail[1..];
            if tail[0] == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
        }
        if !rest.is_empty() {
            self.hold(rest)?;
        }
        Ok(())
    }

    /// Keeps the start of an unfinished line, within the event's bound.
    fn hold(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.partial.len() + self.data.len() + bytes.len() > self.max_event {
            return Err(SseError::TooLong {
                limit: self.max_event,
            });
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    fn line(&mut self, line: &[u8], events: &mut VecDeque<String>) -> Result<(), SseError> {
        // The same bound as `hold` puts on a line still arriving, so whether a stream is
        // refused never depends on where the network cut it.
        if self.data.len() + line.len() > self.max_event {
            return Err(SseError::TooLong {
                limit: self.max_event,
            });
        }
        let line = if self.started {
            line
        } else {
            self.started = true;
            line.strip_prefix(BOM).unwrap_or(line)
        };
        if line.is_empty() {
            if !self.data.is_empty() {
                self.data.pop();
                events.push_back(std::mem::take(&mut self.data));
            }
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        // `event`, `id`, `retry`: nothing exai uses; a comment (an empty field name) only
        // shows the provider is alive.
        if field != b"data" {
            if field.is_empty() {
                self.comments += 1;
            }
            return Ok(());
        }
        let value = std::str::from_utf8(value).map_err(|_| SseError::NotUtf8)?;
        self.data.push_str(value);
        self.data.push('\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The framing exai relies on, fed the way networks deliver it.

    use super::*;

    fn events_of(chunks: &[&[u8]], max_event: usize) -> Result<Vec<String>, SseError> {
        let mut decoder = SseDecoder::new(max_event);
        let mut events = VecDeque::new();
        for chunk in chunks {
            decoder.feed(chunk, &mut events)?;
        }
        Ok(events.into())
    }

    fn events(chunks: &[&str]) -> Vec<String> {
        let bytes: Vec<&[u8]> = chunks.iter().map(|c| c.as_bytes()).collect();
        events_of(&bytes, 1 << 20).unwrap()
    }

    #[test]
    fn events_split_across_chunks_are_joined() {
        let got = events(&["data: {\"a\"", ":1}\n", "\n", "data: [DONE]\n\n"]);
        assert_eq!(got, ["{\"a\":1}", "[DONE]"]);
    }

    #[test]
    fn crlf_cr_comments_other_fields_and_multi_line_data() {
        let got = events(&[
            "\u{feff}: keep-alive\r\n\r\n",
            "event: x\r\nid: 7\r\ndata: line one\r\ndata:line two\r\n\r\n",
            "data: cr only\r\rdata: [DONE]\r",
            "\n\r\n",
        ]);
        assert_eq!(got, ["line one\nline two", "cr only", "[DONE]"]);
    }

    #[test]
    fn comment_lines_are_counted_as_signs_of_life_wherever_the_stream_is_cut() {
        let stream = b": OPENROUTER PROCESSING\n\n:\r\n\r\ndata: {}\n: x\n\nevent: e\n\n";
        for cut in 0..=stream.len() {
            let mut decoder = SseDecoder::new(1 << 10);
            let mut events = VecDeque::new();
            decoder.feed(&stream[..cut], &mut events).unwrap();
            decoder.feed(&stream[cut..], &mut events).unwrap();
            assert_eq!(decoder.comments(), 3, "cut at {cut}");
            assert_eq!(events, ["{}"]);
        }
        // Only whole lines count: a comment still arriving is not yet one.
        let mut decoder = SseDecoder::new(1 << 10);
        decoder.feed(b": OPENROUTER", &mut VecDeque::new()).unwrap();
        assert_eq!(decoder.comments(), 0);
    }

    #[test]
    fn every_split_of_a_stream_gives_the_same_events() {
        let stream = "data: {\"é\":1}\r\n\r\n: c\n\ndata: a\ndata: b\n\ndata: [DONE]\r\n\r\n";
        let whole = events(&[stream]);
        assert_eq!(whole, ["{\"é\":1}", "a\nb", "[DONE]"]);
        let bytes = stream.as_bytes();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let got = events_of(&[&bytes[..i], &bytes[i..j], &bytes[j..]], 1 << 20).unwrap();
                assert_eq!(got, whole, "split at {i} and {j}");
            }
        }
    }

    #[test]
    fn a_line_that_never_ends_is_refused_at_the_bound() {
        let mut decoder = SseDecoder::new(1000);
        let mut events = VecDeque::new();
        decoder.feed(b"data: {\"x\":\"", &mut events).unwrap();
        let chunk = [b'x'; 100];
        let mut fed = 0;
        let error = loop {
            match decoder.feed(&chunk, &mut events) {
                Ok(()) => fed += 1,
                Err(e) => break e,
            }
            assert!(fed < 20, "no bound");
        };
        assert_eq!(error, SseError::TooLong { limit: 1000 });
        assert!(decoder.partial.len() <= 1000);
    }

    #[test]
    fn an_event_of_many_lines_that_never_ends_is_refused_at_the_bound() {
        let line = "data: 0123456789\n".repeat(100);
        let got = events_of(&[line.as_bytes()], 500);
        assert_eq!(got, Err(SseError::TooLong { limit: 500 }));
        // Many small events of the same total are fine.
        let many = "data: 0123456789\n\n".repeat(100);
        assert_eq!(events_of(&[many.as_bytes()], 500).unwrap().len(), 100);
    }

    #[test]
    fn invalid_utf8_in_data_is_an_error_not_a_panic() {
        assert_eq!(
            events_of(&[b"data: \xFF\xFE\n\n"], 100),
            Err(SseError::NotUtf8)
        );
        // In a comment it does no harm.
        assert_eq!(
            events_of(&[b": \xFF\n\ndata: ok\n\n"], 100).unwrap(),
            ["ok"]
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Pieces of a stream: the bytes SSE gives meaning to, and any others.
        fn piece() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                3 => prop::sample::select(vec![
                    &b"data: "[..], b"data:", b"\n", b"\r", b"\r\n", b"\n\n", b": keep-alive",
                    b"event: x", b"[DONE]", b"{\"a\":1}", b"\xEF\xBB\xBF",
                ])
                .prop_map(<[u8]>::to_vec),
                1 => prop::collection::vec(any::<u8>(), 0..12),
            ]
        }

        proptest! {
            /// Any bytes, cut anywhere: no panic, no event past the bound, nothing held past it,
            /// and the same events (or the same error) whatever the cuts.
            #[test]
            fn any_stream_is_read_the_same_however_it_is_cut(
                pieces in prop::collection::vec(piece(), 0..60),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
                max_event in 1usize..64,
            ) {
                let stream: Vec<u8> = pieces.concat();
                let whole = events_of(&[&stream], max_event);
                let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
                at.sort_unstable();
                let mut chunks: Vec<&[u8]> = Vec::new();
                let mut from = 0;
                for cut in at {
                    chunks.push(&stream[from..cut]);
                    from = cut;
                }
                chunks.push(&stream[from..]);

                let mut decoder = SseDecoder::new(max_event);
                let mut events = VecDeque::new();
                let mut cut_outcome = Ok(());
                for chunk in &chunks {
                    cut_outcome = decoder.feed(chunk, &mut events);
                    if cut_outcome.is_err() {
                        break;
                    }
                    prop_assert!(decoder.partial.len() + decoder.data.len() <= max_event);
                }
                for event in &events {
                    prop_assert!(event.len() <= max_event);
                }
                match whole {
                    Ok(all) => {
                        prop_assert!(cut_outcome.is_ok());
                        prop_assert_eq!(Vec::from(events), all);
                        // Keep-alives are counted the same however they arrive.
                        let mut at_once = SseDecoder::new(max_event);
                        at_once.feed(&stream, &mut VecDeque::new()).unwrap();
                        prop_assert_eq!(decoder.comments(), at_once.comments());
                    }
                    Err(error) => prop_assert_eq!(cut_outcome, Err(error)),
                }
            }
        }
    }
}
