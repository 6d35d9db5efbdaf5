//! How a model's answer is laid out for the agent: the model's reasoning when the tool was asked
//! for it (marked, before the answer), the answer, the web pages it drew on, and notes. Shared by
//! every tool that asks a model; the record keeps the reasoning apart either way.

use rmcp::model::ContentBlock;

use crate::providers::ChatResponse;

/// Share of the client's output budget the shown reasoning may take, so the answer after it fits.
const REASONING_SHARE: usize = 3;

/// What a tool wants shown besides the answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Layout {
    /// Show the model's reasoning, marked, before the answer.
    pub show_reasoning: bool,
    /// The most tokens the client accepts (`MAX_MCP_OUTPUT_TOKENS`).
    pub max_output_tokens: usize,
}

/// The content blocks of an answer (reasoning when asked, then the answer with its sources) and
/// the notes the tool should add after them.
pub fn lay_out(answer: &ChatResponse, layout: Layout) -> (Vec<ContentBlock>, Vec<String>) {
    let mut blocks = Vec::new();
    let mut notes = answer.notes.clone();
    if layout.show_reasoning {
        match answer.reasoning.as_deref().filter(|r| !r.trim().is_empty()) {
            Some(reasoning) => {
                let budget = (layout.max_output_tokens / REASONING_SHARE).max(1);
                let shown = match cut_to_tokens(reasoning, budget) {
                    Some(cut) => format!(
                        "{cut}\n[… the reasoning was cut here to leave room for the answer; the \
                         call record keeps all of it]"
                    ),
                    None => reasoning.to_string(),
                };
                blocks.push(ContentBlock::text(format!(
                    "=== Model reasoning (its thinking, not its answer) ===\n{}\n=== End of \
                     reasoning; the answer follows ===",
                    shown.trim_end()
                )));
            }
            None => notes.push(
                "show_reasoning: the model returned no reasoning (it does not think, or its \
                 thinking was off)."
                    .into(),
            ),
        }
    }
    let mut text = answer.text.clone();
    if !answer.sources.is_empty() {
        text.push_str("\n\nSources:");
        for source in &answer.sources {
            text.push_str(&format!("\n- {} — {}", source.title, source.url));
        }
    }
    blocks.push(ContentBlock::text(text));
    if answer.web_searches > 0 {
        notes.push(format!(
            "The model searched the web ({} search{}).",
            answer.web_searches,
            if answer.web_searches == 1 { "" } else { "es" }
        ));
    }
    (blocks, notes)
}

/// `text` cut to about `max` tokens on a char boundary, or None when it fits.
fn cut_to_tokens(text: &str, max: usize) -> Option<String> {
    // A token is at least one byte: short texts need no counting.
    if text.len() <= max {
        return None;
    }
    let tokens = crate::tokens::count(text);
    if tokens <= max {
        return None;
    }
    let mut end = text.len() * max / tokens;
    loop {
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if end == 0 || crate::tokens::count(&text[..end]) <= max {
            return Some(text[..end].to_string());
        }
        end = end * 9 / 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Source;

    fn texts(blocks: &[ContentBlock]) -> Vec<String> {
        blocks
            .iter()
            .filter_map(|b| b.as_text().map(|t| t.text.clone()))
            .collect()
    }

    #[test]
    fn reasoning_comes_first_and_marked_only_when_asked() {
        let answer = ChatResponse {
            text: "42".into(),
            reasoning: Some("six times seven".into()),
            ..ChatResponse::default()
        };
        let layout = Layout {
            show_reasoning: true,
            max_output_tokens: 1000,
        };
        let (blocks, notes) = lay_out(&answer, layout);
        let shown = texts(&blocks);
        assert_eq!(shown.len(), 2);
        assert!(shown[0].starts_with("=== Model reasoning"), "{}", shown[0]);
        assert!(shown[0].contains("six times seven"));
        assert_eq!(shown[1], "42");
        assert!(notes.is_empty());

        let (blocks, _) = lay_out(&answer, Layout::default());
        assert_eq!(texts(&blocks), ["42"]);
    }

    #[test]
    fn long_reasoning_is_cut_to_leave_room_and_missing_reasoning_is_noted() {
        let answer = ChatResponse {
            text: "done".into(),
            reasoning: Some("word ".repeat(3000)),
            ..ChatResponse::default()
        };
        let layout = Layout {
            show_reasoning: true,
            max_output_tokens: 300,
        };
        let (blocks, _) = lay_out(&answer, layout);
        let shown = texts(&blocks);
        assert!(crate::tokens::count(&shown[0]) < 200, "{}", shown[0].len());
        assert!(shown[0].contains("the call record keeps all of it"));
        assert_eq!(shown[1], "done");

        let silent = ChatResponse {
            text: "x".into(),
            ..ChatResponse::default()
        };
        let (_, notes) = lay_out(&silent, layout);
        assert!(notes[0].contains("no reasoning"), "{notes:?}");
    }

    #[test]
    fn sources_are_listed_under_the_answer() {
        let answer = ChatResponse {
            text: "It rained.".into(),
            sources: vec![Source {
                title: "Weather".into(),
                url: "https://example.com/w".into(),
            }],
            web_searches: 2,
            ..ChatResponse::default()
        };
        let (blocks, notes) = lay_out(&answer, Layout::default());
        assert_eq!(
            texts(&blocks),
            ["It rained.\n\nSources:\n- Weather — https://example.com/w"]
        );
        assert_eq!(notes, ["The model searched the web (2 searches)."]);
    }
}
