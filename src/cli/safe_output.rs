//! What the commands print, with control characters shown rather than obeyed.
//!
//! Records, answers and threads hold text from models and providers, which a crafted repository
//! or endpoint can fill with terminal escapes: an escape sequence printed raw can retitle the
//! window, clear the screen, hide text or, on some terminals, write the clipboard. Each control
//! character but tab and newline (and a carriage return before a newline) is written as its
//! JSON escape (`\u001b`): readable as text, and the same character inside a JSON string, so
//! `--json` output stays the same data.

use std::io::{self, Write};

/// `text` with its control characters escaped, for a line written elsewhere (an error on stderr,
/// a progress bar's message).
pub fn shown(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    {
        let mut safe = SafeOutput::new(&mut out);
        // Writing to a Vec cannot fail.
        let _ = safe.write_all(text.as_bytes());
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A writer that passes text through with control characters escaped.
pub struct SafeOutput<W: Write> {
    inner: W,
    /// A carriage return not yet known to end a line (`\r\n` passes as it is).
    held_return: bool,
    /// The first byte of a two-byte UTF-8 character that may be a C1 control (U+0080–U+009F).
    held_c2: bool,
}

impl<W: Write> SafeOutput<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            held_return: false,
            held_c2: false,
        }
    }

    fn escaped(out: &mut Vec<u8>, code: u8) {
        out.extend_from_slice(format!("\\u{code:04x}").as_bytes());
    }

    /// Writes what is held as it stands: nothing more will follow it.
    fn release(&mut self) -> io::Result<()> {
        let mut out = Vec::new();
        if self.held_return {
            Self::escaped(&mut out, b'\r');
        }
        if self.held_c2 {
            out.push(0xc2);
        }
        self.held_return = false;
        self.held_c2 = false;
        self.inner.write_all(&out)
    }
}

impl<W: Write> Write for SafeOutput<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut out = Vec::with_capacity(bytes.len());
        for &byte in bytes {
            if std::mem::take(&mut self.held_c2) {
                if (0x80..=0x9f).contains(&byte) {
                    // U+0080 + (byte - 0x80): the C1 control's code is the byte itself.
                    Self::escaped(&mut out, byte);
                    continue;
                }
                out.push(0xc2);
            }
            if std::mem::take(&mut self.held_return) {
                if byte == b'\n' {
                    out.push(b'\r');
                } else {
                    Self::escaped(&mut out, b'\r');
                }
            }
            match byte {
                b'\n' | b'\t' => out.push(byte),
                b'\r' => self.held_return = true,
                0xc2 => self.held_c2 = true,
                0x00..=0x1f | 0x7f => Self::escaped(&mut out, byte),
                _ => out.push(byte),
            }
        }
        self.inner.write_all(&out)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Drop for SafeOutput<W> {
    fn drop(&mut self) {
        // Nothing to tell anyone at this point if the terminal has gone.
        let _ = self.release();
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(pieces: &[&[u8]]) -> String {
        let mut out = Vec::new();
        {
            let mut safe = SafeOutput::new(&mut out);
            for piece in pieces {
                safe.write_all(piece).unwrap();
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        let crafted =
            "title \u{1b}]0;PWNED\u{7} clear \u{1b}[2J csi \u{9b}31m del \u{7f} nul \u{0}";
        assert_eq!(
            through(&[crafted.as_bytes()]),
            "title \\u001b]0;PWNED\\u0007 clear \\u001b[2J csi \\u009b31m del \\u007f nul \\u0000"
        );
    }

    #[test]
    fn text_lines_tabs_and_other_characters_pass_as_they_are() {
        let text = "é ü ¢ — ✓ 日本\tcol\nline\r\nnext ©";
        assert_eq!(through(&[text.as_bytes()]), text);
    }

    #[test]
    fn a_return_that_does_not_end_a_line_is_shown() {
        assert_eq!(through(&[b"shown\rhidden\n"]), "shown\\u000dhidden\n");
        assert_eq!(through(&[b"end\r"]), "end\\u000d");
    }

    #[test]
    fn sequences_split_across_writes_are_still_caught() {
        let csi = "a\u{9b}b".as_bytes();
        assert_eq!(through(&[&csi[..2], &csi[2..]]), "a\\u009bb");
        let cent = "¢".as_bytes();
        assert_eq!(through(&[&cent[..1], &cent[1..]]), "¢");
        assert_eq!(through(&[b"x\r", b"\ny\r", b"z"]), "x\r\ny\\u000dz");
    }

    #[test]
    fn a_line_for_elsewhere_is_escaped_the_same_way() {
        assert_eq!(shown("a\u{1b}[2Jb\n"), "a\\u001b[2Jb\n");
    }

    #[test]
    fn json_keeps_its_meaning() {
        let value = serde_json::json!({"text": "a\u{7f}b\u{85}c"});
        let printed = through(&[serde_json::to_string(&value).unwrap().as_bytes()]);
        let read: serde_json::Value = serde_json::from_str(&printed).unwrap();
        assert_eq!(read, value);
        assert!(!printed.contains('\u{7f}') && !printed.contains('\u{85}'));
    }
}
