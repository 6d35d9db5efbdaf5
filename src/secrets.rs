//! Secrets spotted in outside text and masked: credentials inside URLs, `name=value` and
//! `"name": "value"` pairs whose name looks secret, `Bearer`/`Basic` credentials, well-known key
//! formats, and the exact secrets the caller knows. Used wherever such text (a provider's error
//! body, a URL from the config) is logged, stored or shown; `calls/redact.rs` masks JSON
//! arguments by the same notion of a secret name.

use std::sync::LazyLock;

use memchr::memmem;

/// What a masked secret is replaced with.
pub const MASK: &str = "***";

/// Known secrets shorter than this are not searched for in text: a short string would
/// mask ordinary words (test keys like `k`), and is no real key anyway.
const MIN_KNOWN_SECRET: usize = 8;

/// Well-known key formats: the prefix is kept, what follows it is masked.
const KEY_PREFIXES: &[&str] = &[
    "sk-",
    "sk_",
    "pk_",
    "rk_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "AKIA",
    "ASIA",
    "AIza",
    "ya29.",
    "hf_",
    "npm_",
    "pypi-",
    "xoxs-",
    "xapp-",
    // exai's own personal tokens.
    "exai_u_",
];

/// Characters after a key prefix that make it a key (fewer: an ordinary word like `sk-learn`).
const MIN_KEY_BODY: usize = 8;

/// What a secret-looking name contains (in any case).
const SECRET_NAME_PARTS: [&str; 8] = [
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "authorization",
    "cookie",
    "credential",
];
/// Names that are secret-looking whole (in any case).
const SECRET_NAMES: [&str; 5] = ["sig", "signature", "auth", "pass", "pwd"];

/// Whether a field or parameter name looks like it holds a secret (`api_key`, `token`,
/// `Authorization`, …); counts such as `max_tokens` and MCP's `progressToken` are not secrets.
pub fn is_secret_name(name: &str) -> bool {
    // Compared in place, ignoring ASCII case (every name of a call's arguments and result comes
    // here: a lowered copy and a substring search apiece cost more than the rest of the check).
    let bytes = name.as_bytes();
    let contains = |part: &str| {
        bytes
            .windows(part.len())
            .any(|window| window.eq_ignore_ascii_case(part.as_bytes()))
    };
    let looks_secret = SECRET_NAME_PARTS.into_iter().any(contains)
        || SECRET_NAMES
            .iter()
            .any(|whole| name.eq_ignore_ascii_case(whole));
    let counts_tokens =
        bytes.len() >= 6 && bytes[bytes.len() - 6..].eq_ignore_ascii_case(b"tokens");
    looks_secret && !name.eq_ignore_ascii_case("progresstoken") && !counts_tokens
}

/// `url` with its user and password and the values of secret-looking query parameters masked:
/// `https://user:pw@host/v1?key=abc&v=1` → `https://***@host/v1?key=***&v=1`.
pub fn mask_url(url: &str) -> String {
    redact_text(url, &[])
}

/// Whether a setting's `value` carries a credential: a URL with a password or with a
/// secret-named parameter (`?key=`), a `password=…` pair (libpq's form), a key in a well-known
/// format. A URL's user alone is a name, not a credential (`postgres://exai@db/team`), unless it
/// is a key itself.
pub fn holds_credential(value: &str) -> bool {
    let spotted = |text: &str| redact_text(text, &[]) != text;
    match reqwest::Url::parse(value) {
        Ok(mut url) if url.has_host() => {
            let user = url.username().to_string();
            if url.password().is_some() || spotted(&user) {
                return true;
            }
            let _ = url.set_username("");
            spotted(url.as_str())
        }
        _ => spotted(value),
    }
}

/// `text` with every secret this module can spot replaced by [`MASK`], and every occurrence of
/// the `known` secrets (the endpoint's own key, say) too.
pub fn redact_text(text: &str, known: &[&str]) -> String {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    url_credentials(text, &mut spans);
    secret_pairs(bytes, &mut spans);
    auth_schemes(bytes, &mut spans);
    prefixed_keys(text, &mut spans);
    for secret in known.iter().filter(|s| s.len() >= MIN_KNOWN_SECRET) {
        spans.extend(text.match_indices(secret).map(|(i, s)| (i, i + s.len())));
    }
    masked(text, spans)
}

/// `text` with the secrets that are certainly secrets masked: keys in a well-known format, a
/// URL's user and password, the body of a private key block. For text that is not an error but
/// content (a prompt, an answer, code): `name = value` pairs are left alone there, as code is full
/// of them. Borrowed when nothing was masked (the usual case, with no copy).
pub fn mask_keys(text: &str) -> std::borrow::Cow<'_, str> {
    let mut spans = Vec::new();
    url_credentials(text, &mut spans);
    prefixed_keys(text, &mut spans);
    private_key_blocks(text, &mut spans);
    match spans.is_empty() {
        true => std::borrow::Cow::Borrowed(text),
        false => std::borrow::Cow::Owned(masked(text, spans)),
    }
}

/// The body of every `-----BEGIN … PRIVATE KEY-----` block, up to its `-----END` (or the end).
/// One pass: the search goes on after each block, so text full of headers costs its length.
fn private_key_blocks(text: &str, spans: &mut Vec<(usize, usize)>) {
    let mut from = 0;
    while let Some(i) = find_from(text, from, &KEY_HEADER_END) {
        let start = i + KEY_HEADER_END.needle().len();
        from = start;
        // The END line's own "PRIVATE KEY-----" starts no block (the nearest `-----` before it
        // lies within this header's line, or ends the previous match).
        if text[..i]
            .rfind("-----")
            .is_some_and(|at| text[at..i].starts_with("-----END"))
        {
            continue;
        }
        let end = text[start..]
            .find("-----END")
            .map_or(text.len(), |n| start + n);
        spans.push((start, end));
        from = end;
    }
}

/// Where `needle` first occurs in `text` at or after `from` (`None` when `from` is past the end
/// or off a character boundary). Each needle's searcher is made once ([`URL_SCHEME_END`],
/// [`KEY_HEADER_END`]), not for every text as `str::find` makes one.
fn find_from(text: &str, from: usize, needle: &memmem::Finder<'_>) -> Option<usize> {
    let rest = text.get(from..)?;
    needle.find(rest.as_bytes()).map(|n| from + n)
}

/// What ends a URL's scheme, before its user and password.
static URL_SCHEME_END: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new("://"));
/// What ends a private key block's header (`-----BEGIN … PRIVATE KEY-----`).
static KEY_HEADER_END: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new("PRIVATE KEY-----"));

/// Replaces the byte ranges `spans` (each on char boundaries) with [`MASK`].
fn masked(text: &str, mut spans: Vec<(usize, usize)>) -> String {
    if spans.is_empty() {
        return text.to_string();
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        if end <= at {
            continue;
        }
        let start = start.max(at);
        out.push_str(&text[at..start]);
        out.push_str(MASK);
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// Bytes that end a URL, a value or a token in running text.
fn ends_value(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b'"' | b'\''
                | b'\\'
                | b'<'
                | b'>'
                | b'`'
                | b','
                | b';'
                | b')'
                | b']'
                | b'}'
                | b'&'
                | b'#'
        )
}

/// Bytes of a name (`api_key`, `x-api-key`).
fn is_name_byte(b: u8) -> bool {
    NAME_BYTES[usize::from(b)]
}

/// [`is_name_byte`] for every byte, looked up (every byte of a call's result passes by it).
const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.');
        b += 1;
    }
    table
};

/// The user and password of every `scheme://user:pw@host`.
fn url_credentials(text: &str, spans: &mut Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = find_from(text, from, &URL_SCHEME_END) {
        let start = i + URL_SCHEME_END.needle().len();
        from = start;
        let end = bytes[start..]
            .iter()
            .position(|&b| ends_value(b) || matches!(b, b'/' | b'?' | b'#'))
            .map_or(bytes.len(), |n| start + n);
        if let Some(at) = bytes[start..end].iter().rposition(|&b| b == b'@') {
            spans.push((start, start + at));
        }
    }
}

/// The values of `name=value`, `name: value` and `"name": "value"` whose name looks secret.
fn secret_pairs(bytes: &[u8], spans: &mut Vec<(usize, usize)>) {
    // The end of the last value masked: a pair inside it is masked already, and scanning its
    // value again would make `key=key=key=…` cost the square of its length.
    let mut covered = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if (b != b'=' && b != b':') || i < covered {
            continue;
        }
        // `://` is a URL, not a pair.
        if b == b':' && bytes[i + 1..].starts_with(b"//") {
            continue;
        }
        let mut name_end = i;
        while name_end > 0 && is_quote_or_space(bytes[name_end - 1]) {
            name_end -= 1;
        }
        let mut name_start = name_end;
        while name_start > 0 && is_name_byte(bytes[name_start - 1]) {
            name_start -= 1;
        }
        if name_start == name_end {
            continue;
        }
        // Names are ASCII by construction, so this never fails.
        let Ok(name) = std::str::from_utf8(&bytes[name_start..name_end]) else {
            continue;
        };
        if !is_secret_name(name) {
            continue;
        }
        let mut start = i + 1;
        while start < bytes.len() && is_quote_or_space(bytes[start]) {
            start += 1;
        }
        let end = value_end(bytes, start);
        if end > start {
            spans.push((start, end));
            covered = end;
        }
    }
}

/// What may stand between a name, its `=`/`:` and its value (`"api_key": "…"`, `\"key\":`).
fn is_quote_or_space(b: u8) -> bool {
    matches!(b, b' ' | b'"' | b'\'' | b'\\')
}

fn value_end(bytes: &[u8], start: usize) -> usize {
    bytes[start..]
        .iter()
        .position(|&b| ends_value(b))
        .map_or(bytes.len(), |n| start + n)
}

/// What follows `Bearer ` and `Basic ` (any case).
fn auth_schemes(bytes: &[u8], spans: &mut Vec<(usize, usize)>) {
    for scheme in [&b"bearer "[..], &b"basic "[..]] {
        let n = scheme.len();
        for i in 0..bytes.len().saturating_sub(n) {
            if bytes[i..i + n].eq_ignore_ascii_case(scheme)
                && (i == 0 || !is_name_byte(bytes[i - 1]))
            {
                let end = value_end(bytes, i + n);
                if end > i + n {
                    spans.push((i + n, end));
                }
            }
        }
    }
}

/// Where the run of name bytes from `start` ends.
fn name_end(bytes: &[u8], start: usize) -> usize {
    bytes[start..]
        .iter()
        .position(|&b| !is_name_byte(b))
        .map_or(bytes.len(), |n| start + n)
}

/// Whether a byte can begin one of [`KEY_PREFIXES`].
const KEY_FIRST_BYTES: [bool; 256] = {
    let mut first = [false; 256];
    let mut i = 0;
    while i < KEY_PREFIXES.len() {
        first[KEY_PREFIXES[i].as_bytes()[0] as usize] = true;
        i += 1;
    }
    first
};

/// Keys in a well-known format (`sk-…`, `ghp_…`, `AKIA…`): what follows the prefix. One pass
/// over the text for all prefixes (a search per prefix cost more than the rest of a call's
/// record keeping): a key starts where a name does and ends where it ends, so the prefixes are
/// looked for at the start of each name only, and the scan goes on after the name.
fn prefixed_keys(text: &str, spans: &mut Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !NAME_BYTES[usize::from(bytes[i])] {
            i += 1;
            continue;
        }
        // A name starts here; a key, if any, starts with it and ends with it.
        let end_of_name = name_end(bytes, i);
        if KEY_FIRST_BYTES[usize::from(bytes[i])] {
            for prefix in KEY_PREFIXES {
                // Every prefix is made of name bytes (a test holds it), so one found here ends
                // within the name; saturating all the same. Its first byte is compared first, in
                // place of a call to compare it whole with each prefix.
                if prefix.as_bytes()[0] == bytes[i]
                    && bytes[i..].starts_with(prefix.as_bytes())
                    && end_of_name.saturating_sub(i + prefix.len()) >= MIN_KEY_BODY
                {
                    spans.push((i + prefix.len(), end_of_name));
                }
            }
        }
        i = end_of_name;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_holds_a_credential_when_it_carries_a_password_or_a_key() {
        for value in [
            "postgres://exai:hunter2@db.example/team",
            "postgres://db/team?password=hunter2",
            "host=db user=exai password=hunter2",
            "https://gw.example/v1?api_key=abc",
            "https://ghp_0123456789abcdef@gw.example/v1",
            "sk-0123456789abcdef",
        ] {
            assert!(holds_credential(value), "{value}");
        }
        for value in [
            "postgres://exai@db.example/team",
            "postgres://db/team?sslmode=require",
            "http://127.0.0.1:11434/v1",
            "https://api.z.ai/api/paas/v4?api-version=2024",
            "glm-4.7",
            "codex=600,gemini=300",
            "/home/me/certs.pem",
        ] {
            assert!(!holds_credential(value), "{value}");
        }
    }

    #[test]
    fn url_credentials_and_secret_parameters_are_masked() {
        assert_eq!(
            mask_url("https://user:pa55@host.example:8443/v1?key=abc&api-version=2024&token=t#x"),
            "https://***@host.example:8443/v1?key=***&api-version=2024&token=***#x"
        );
        assert_eq!(
            mask_url("http://127.0.0.1:9/v1"),
            "http://127.0.0.1:9/v1",
            "nothing to mask"
        );
        assert_eq!(
            mask_url("https://tok@h/p?api_key=k1&sig=s&max_tokens=5"),
            "https://***@h/p?api_key=***&sig=***&max_tokens=5"
        );
    }

    #[test]
    fn error_bodies_lose_their_keys_but_keep_their_meaning() {
        let body = r#"{"error":{"message":"Incorrect API key provided: sk-proj-abcdefgh12345678. Authorization: Bearer xyz.123 api_key=zzz9 \"secret\": \"s3\""}}"#;
        let clean = redact_text(body, &[]);
        for secret in ["abcdefgh12345678", "xyz.123", "zzz9", "s3"] {
            assert!(!clean.contains(secret), "{secret} in {clean}");
        }
        assert!(
            clean.contains("Incorrect API key provided: sk-***"),
            "{clean}"
        );
        assert_eq!(
            redact_text("the key was rejected; 12:30 max_tokens=5", &[]),
            "the key was rejected; 12:30 max_tokens=5"
        );
    }

    #[test]
    fn known_secrets_are_masked_wherever_they_appear_unless_too_short() {
        assert_eq!(
            redact_text("you sent GLMKEY.0123456789, k", &["GLMKEY.0123456789", "k"]),
            "you sent ***, k"
        );
    }

    #[test]
    fn multibyte_text_around_secrets_is_kept_whole() {
        let text = "clé invalide: «token=ééé» — https://ü:ß@hôte/";
        let clean = redact_text(text, &[]);
        assert_eq!(clean, "clé invalide: «token=*** — https://***@hôte/");
    }

    #[test]
    fn content_keeps_its_code_and_loses_its_keys() {
        let answer = "use `api_key = os.environ[\"KEY\"]`; your key sk-proj-abcdefgh12345678 and \
                      token exai_u_0123456789abcdef leaked, as did https://bob:hunter22@db.example/x\n\
                      -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n";
        let masked = mask_keys(answer);
        for secret in [
            "abcdefgh12345678",
            "0123456789abcdef",
            "hunter22",
            "b3BlbnNzaC1rZXk=",
        ] {
            assert!(!masked.contains(secret), "{secret} in {masked}");
        }
        assert!(masked.contains("api_key = os.environ[\"KEY\"]"), "{masked}");
        assert!(
            masked.contains("-----END OPENSSH PRIVATE KEY-----"),
            "{masked}"
        );
        let plain = "nothing here: max_tokens=5, password = input()";
        assert!(matches!(mask_keys(plain), std::borrow::Cow::Borrowed(_)));
    }

    /// Text crafted to make each match rescan the rest (many headers and no end, a key prefix
    /// repeated with no break) costs its length, not its length squared: 4 MiB of each is masked
    /// in a fraction of what the quadratic scan took (2.7 s for 1 MiB, released; 4 MiB, 16 times
    /// that).
    #[test]
    fn crafted_text_is_masked_in_linear_time() {
        for unit in [
            "PRIVATE KEY-----",
            "sk-",
            "://a",
            "-----END PRIVATE KEY-----",
        ] {
            let text = unit.repeat((4 << 20) / unit.len());
            let started = std::time::Instant::now();
            let masked = mask_keys(&text);
            assert!(masked.len() <= text.len());
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{unit}: {:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn crafted_pairs_are_redacted_in_linear_time() {
        for unit in ["key=", "token: ", "\"api_key\":"] {
            let text = unit.repeat((1 << 20) / unit.len());
            let started = std::time::Instant::now();
            let redacted = redact_text(&text, &[]);
            assert!(!redacted.is_empty());
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "{unit}: {:?}",
                started.elapsed()
            );
        }
        // What is masked is unchanged: each secret-named value, once.
        assert_eq!(
            redact_text("key=a key=b", &[]),
            redact_text("key=a", &[]) + " " + &redact_text("key=b", &[])
        );
    }

    #[test]
    fn every_key_prefix_is_made_of_name_bytes() {
        // A key is looked for at the start of a name only, and ends where the name does.
        for prefix in KEY_PREFIXES {
            assert!(prefix.bytes().all(is_name_byte), "{prefix}");
        }
    }

    #[test]
    fn names_that_hold_secrets() {
        for name in [
            "api_key",
            "x-api-key",
            "Authorization",
            "access_token",
            "sig",
            "password",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["max_tokens", "progressToken", "model", "signal", "author"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// The search this module made before its one pass: each prefix found on its own.
        fn prefixed_keys_prefix_by_prefix(text: &str) -> Vec<(usize, usize)> {
            let bytes = text.as_bytes();
            let mut spans = Vec::new();
            for prefix in KEY_PREFIXES {
                for (i, _) in text.match_indices(prefix) {
                    if i > 0 && is_name_byte(bytes[i - 1]) {
                        continue;
                    }
                    let start = i + prefix.len();
                    let end = name_end(bytes, start);
                    if end - start >= MIN_KEY_BODY {
                        spans.push((start, end));
                    }
                }
            }
            spans.sort_unstable();
            spans
        }

        /// The check as it was first written: the name lowered, then searched.
        fn is_secret_name_lowered(name: &str) -> bool {
            let k = name.to_ascii_lowercase();
            let looks_secret = SECRET_NAME_PARTS.iter().any(|s| k.contains(s))
                || SECRET_NAMES.contains(&k.as_str());
            looks_secret && k != "progresstoken" && !k.ends_with("tokens")
        }

        proptest! {
            /// The check in place says what lowering the name and searching it said, of names
            /// made of the words it looks for, in any case, and other name bytes.
            #[test]
            fn a_secret_name_is_told_as_when_the_name_was_lowered(
                parts in prop::collection::vec(
                    prop_oneof![
                        prop::sample::select(vec![
                            "key", "TOKEN", "Tokens", "secret", "passWord", "passwd", "auth",
                            "Authorization", "cookie", "credential", "sig", "signature", "pass",
                            "pwd", "progressToken", "max_", "é",
                        ]).prop_map(str::to_string),
                        "[a-zA-Z0-9_.-]{0,6}",
                    ],
                    0..4,
                )
            ) {
                let name: String = parts.concat();
                prop_assert_eq!(is_secret_name(&name), is_secret_name_lowered(&name), "{}", name);
            }

            /// A needle is found where `str::find` finds it, from any place in text made of
            /// needles, their pieces and other characters.
            #[test]
            fn a_needle_is_found_where_str_find_finds_it(
                parts in prop::collection::vec(
                    prop_oneof![
                        prop::sample::select(vec![
                            "://", ":/", ":", "/", "PRIVATE KEY-----", "PRIVATE KEY--", "P", "-",
                        ]).prop_map(str::to_string),
                        "[a-zA-Z0-9 é:/-]{0,6}",
                    ],
                    0..16,
                ),
                from in 0usize..64,
            ) {
                let text: String = parts.concat();
                for needle in ["://", "PRIVATE KEY-----", "-----END"] {
                    let expected = text
                        .get(from..)
                        .and_then(|rest| rest.find(needle))
                        .map(|n| from + n);
                    let finder = memmem::Finder::new(needle);
                    prop_assert_eq!(find_from(&text, from, &finder), expected, "{:?} {}", text, from);
                }
            }

            /// The one pass finds what a search for each prefix finds, in text made of key
            /// prefixes, name bytes, separators and multibyte characters.
            #[test]
            fn one_pass_finds_the_keys_each_prefix_search_finds(
                parts in prop::collection::vec(
                    prop_oneof![
                        prop::sample::select(KEY_PREFIXES.to_vec()).prop_map(str::to_string),
                        "[a-zA-Z0-9_.-]{0,12}",
                        "[ =:/\"'é\n]{1,3}",
                    ],
                    0..24,
                )
            ) {
                let text: String = parts.concat();
                let mut spans = Vec::new();
                prefixed_keys(&text, &mut spans);
                spans.sort_unstable();
                prop_assert_eq!(spans, prefixed_keys_prefix_by_prefix(&text));
            }
        }
    }
}
