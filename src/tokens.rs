//! Token counting with a real BPE tokenizer (o200k, as modern OpenAI-compatible models use);
//! GLM and Kimi tokenize differently, but within a few percent, which is what budgets need.

/// Tokens in `text`.
pub fn count(text: &str) -> usize {
    tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(text)
        .len()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_words_not_characters() {
        assert_eq!(super::count(""), 0);
        let n = super::count("The quick brown fox jumps over the lazy dog.");
        assert!((9..=12).contains(&n), "{n}");
    }
}
