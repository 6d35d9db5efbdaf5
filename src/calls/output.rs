//! Fitting an answer to what a client accepts: MCP clients cap tool output (Claude Code at
//! 25,000 tokens by default), so a longer answer is cut with a note; the record keeps it whole.

use rmcp::model::{CallToolResult, ContentBlock};

/// `fit_for_client` run where it may: counting tokens is CPU work (and the first count loads
/// the tokenizer), so an answer that needs counting is cut on a blocking thread.
pub async fn fitted(result: CallToolResult, max_tokens: usize, call_id: &str) -> CallToolResult {
    if total_chars(&result) <= max_tokens {
        return result;
    }
    let call_id = call_id.to_string();
    let whole = result.clone();
    crate::spawn::blocking(move || fit_for_client(&result, max_tokens, &call_id))
        .await
        .unwrap_or(whole)
}

fn total_chars(result: &CallToolResult) -> usize {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.len()))
        .sum()
}

/// Cuts the text of `result` to about `max_tokens`, saying where the whole answer is.
pub fn fit_for_client(result: &CallToolResult, max_tokens: usize, call_id: &str) -> CallToolResult {
    // A token is at least one byte: short answers need no counting.
    if total_chars(result) <= max_tokens {
        return result.clone();
    }
    let mut left = max_tokens;
    let mut cut = false;
    let mut fitted = result.clone();
    fitted.content = result
        .content
        .iter()
        .filter_map(|block| {
            let Some(text) = block.as_text() else {
                return Some(block.clone());
            };
            if left == 0 {
                cut = true;
                return None;
            }
            let tokens = crate::tokens::count(&text.text);
            if tokens <= left {
                left -= tokens;
                return Some(block.clone());
            }
            cut = true;
            // Keep the share of the text that fits, on a char boundary, shrinking until it does.
            let mut end = (text.text.len() * left / tokens.max(1)).min(text.text.len());
            loop {
                while !text.text.is_char_boundary(end) {
                    end -= 1;
                }
                if end == 0 || crate::tokens::count(&text.text[..end]) <= left {
                    break;
                }
                end = end * 9 / 10;
            }
            left = 0;
            Some(ContentBlock::text(text.text[..end].to_string()))
        })
        .collect();
    if cut {
        // The thread must survive the cut: many agents read only the text, not structuredContent.
        let thread = result
            .structured_content
            .as_ref()
            .and_then(|s| s.get("continuation_id"))
            .and_then(|id| id.as_str())
            .map(|id| {
                format!(
                    "\ncontinuation_id: {id} — pass it to continue this conversation (with chat or another tool)."
                )
            })
            .unwrap_or_default();
        fitted.content.push(ContentBlock::text(format!(
            "[exai: the answer was cut to about {max_tokens} tokens, the most this client accepts \
             (MAX_MCP_OUTPUT_TOKENS). The whole answer is kept: `exai calls show {call_id}`.]{thread}"
        )));
    }
    fitted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_answers_pass_and_long_ones_are_cut_with_a_note() {
        let short = CallToolResult::success(vec![ContentBlock::text("hello")]);
        assert_eq!(fit_for_client(&short, 100, "id").content.len(), 1);
        let long = CallToolResult::success(vec![
            ContentBlock::text("word ".repeat(5000)),
            ContentBlock::text("notes"),
        ]);
        let fitted = fit_for_client(&long, 1000, "the-id");
        let texts: Vec<String> = fitted
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect();
        assert!(crate::tokens::count(&texts[0]) <= 1000);
        assert!(texts.last().unwrap().contains("exai calls show the-id"));
        assert!(fitted.content.iter().all(|c| c.as_text().is_some()));
        let mut threaded = long.clone();
        threaded.structured_content = Some(serde_json::json!({"continuation_id": "thread-7"}));
        let fitted = fit_for_client(&threaded, 1000, "the-id");
        let last = fitted
            .content
            .last()
            .unwrap()
            .as_text()
            .unwrap()
            .text
            .clone();
        assert!(last.contains("continuation_id: thread-7"), "{last}");
    }
}
