//! Token counting with a real BPE tokenizer (o200k, as modern OpenAI-compatible models use);
//! GLM and Kimi tokenize differently, but within a few percent, which is what budgets need.

/// Tokens in `text`.
pub fn count(text: &str) -> usize {
    tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(text)
        .len()
}

/// Text counted in one piece; a longer text is counted a piece at a time.
const PIECE_BYTES: usize = 64 * 1024;
/// How many tokens a cut between two pieces may add or take (a word or a run of spaces split
/// in two): a count of pieces past `limit` by more than this for each cut is surely past it.
const CUT_SLACK: usize = 8;

/// Tokens in `text` if they are at most `limit`, else `None` — without tokenizing much more
/// than `limit` tokens' worth of a text far past it (a 1 MiB file that never fits a budget is
/// not counted whole). A count that is returned is exact.
pub fn count_within(text: &str, limit: usize) -> Option<usize> {
    if text.len() <= PIECE_BYTES {
        return Some(count(text)).filter(|n| *n <= limit);
    }
    let mut counted = 0;
    let mut rest = text;
    let mut cuts = 0;
    while !rest.is_empty() {
        // Cut after a newline where there is one, on a character boundary anyway.
        let mut end = PIECE_BYTES.min(rest.len());
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        if end < rest.len()
            && let Some(newline) = rest[..end].rfind('\n')
        {
            end = newline + 1;
        }
        counted += count(&rest[..end]);
        rest = &rest[end..];
        if counted > limit + cuts * CUT_SLACK {
            return None;
        }
        cuts += usize::from(!rest.is_empty());
    }
    // The pieces' sum may be off by a few tokens at each cut: the whole is counted again, so
    // the count returned is exact (a long text that fits costs two counts, one that does not at
    // most a little over `limit`'s worth).
    Some(count(text)).filter(|n| *n <= limit)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_text_far_past_the_limit_is_not_counted_whole_and_one_within_is_counted_exactly() {
        let text = "fn a() { let x = 1; }\n".repeat(20_000);
        let whole = super::count(&text);
        assert_eq!(super::count_within(&text, whole), Some(whole));
        assert_eq!(super::count_within(&text, whole - 1), None);
        assert_eq!(super::count_within(&text, 1_000), None);
        assert_eq!(super::count_within("a b c", 1), None);
        assert_eq!(super::count_within("", 0), Some(0));
    }

    #[test]
    fn counts_words_not_characters() {
        assert_eq!(super::count(""), 0);
        let n = super::count("The quick brown fox jumps over the lazy dog.");
        assert!((9..=12).contains(&n), "{n}");
    }
}
