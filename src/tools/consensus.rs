//! `consensus`: several models weigh one proposal at the same time, each blinded to the others
//! and given a stance; the answer gathers their verdicts and a synthesis. One model failing
//! does not sink the rest.

use std::borrow::Cow;

use std::sync::Arc;

use futures::future::join_all;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::consult::{self, Answer, Question};
use super::{ExaiTool, ToolContext, ToolFuture, definition, parse_arguments};
use crate::calls::{FailureKind, ToolFailure, Usage};
use crate::providers::price::usd_json;
use crate::providers::{Need, Resolved};
use crate::threads::Turn;

const PROMPT: &str = include_str!("prompts/consensus.txt");
const SYNTHESIS_PROMPT: &str = include_str!("prompts/consensus_synthesis.txt");
const STANCE_FOR: &str = include_str!("prompts/stance_for.txt");
const STANCE_AGAINST: &str = include_str!("prompts/stance_against.txt");
const STANCE_NEUTRAL: &str = include_str!("prompts/stance_neutral.txt");
/// Most models one consensus may ask.
const MAX_MODELS: usize = 8;

pub struct Consensus;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Stance {
    For,
    Against,
    #[default]
    Neutral,
}

/// One model to consult.
#[derive(Debug, Deserialize, JsonSchema)]
struct Consulted {
    /// Model id, alias or `provider:model`; `cli:codex` (any clink CLI) asks that coding agent.
    model: String,
    /// for, against or neutral (default).
    #[serde(default)]
    stance: Stance,
    /// Your own instructions for this model's stance, instead of the built-in ones.
    #[serde(default)]
    stance_prompt: Option<String>,
}

/// Where each consulted model stands, for the progress line.
struct Board {
    models: Vec<String>,
    /// None while the model works; Some(answered?) once it is done.
    done: std::sync::Mutex<Vec<Option<bool>>>,
}

impl Board {
    fn new(models: impl Iterator<Item = String>) -> Self {
        let models: Vec<String> = models.collect();
        let done = std::sync::Mutex::new(vec![None; models.len()]);
        Self { models, done }
    }

    fn done(&self, at: usize, answered: bool) {
        if let Some(slot) = self
            .done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(at)
        {
            *slot = Some(answered);
        }
    }

    /// "consulting 3 models: a answered, b working, c failed".
    fn line(&self) -> String {
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        let each: Vec<String> = self
            .models
            .iter()
            .zip(done.iter())
            .map(|(model, state)| {
                let state = match state {
                    None => "working",
                    Some(true) => "answered",
                    Some(false) => "failed",
                };
                format!("{model} {state}")
            })
            .collect();
        format!(
            "consulting {} models: {}",
            self.models.len(),
            each.join(", ")
        )
    }
}

/// The models to consult, each given in full or by its name alone (a neutral stance).
fn by_name_or_in_full<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Consulted>, D::Error> {
    Vec::<serde_json::Value>::deserialize(deserializer)?
        .into_iter()
        .map(|given| match given {
            serde_json::Value::String(model) => Ok(Consulted {
                model,
                stance: Stance::default(),
                stance_prompt: None,
            }),
            other => serde_json::from_value(other).map_err(serde::de::Error::custom),
        })
        .collect()
}

/// Arguments of `consensus` (names as Zen/PAL clients send them). Zen's step fields
/// (step_number, current_model_index, …) are ignored: every model is asked in this one call.
#[derive(Debug, Deserialize, JsonSchema)]
struct ConsensusArguments {
    /// The proposal or question, complete: each model sees only this and the files.
    #[serde(alias = "prompt")]
    step: String,
    /// Two or more models, each {model, stance: for|against|neutral, stance_prompt?} or a plain model name (neutral); `cli:codex` asks a clink CLI.
    #[serde(deserialize_with = "by_name_or_in_full")]
    models: Vec<Consulted>,
    /// Your own analysis, given to the synthesis only.
    #[serde(default)]
    findings: Option<String>,
    /// Absolute paths of files every model should see.
    #[serde(default)]
    relevant_files: Vec<String>,
    /// Images every model should see (absolute paths or data URLs).
    #[serde(default)]
    images: Vec<String>,
    /// Continue an earlier conversation.
    #[serde(default)]
    continuation_id: Option<String>,
    /// false to skip the written synthesis (verdicts only).
    #[serde(default)]
    synthesize: Option<bool>,
}

fn bad(message: impl std::fmt::Display) -> ToolFailure {
    ToolFailure::new(
        FailureKind::BadArguments,
        format!("invalid arguments for consensus: {message}"),
    )
}

fn stance_name(stance: Stance) -> &'static str {
    match stance {
        Stance::For => "for",
        Stance::Against => "against",
        Stance::Neutral => "neutral",
    }
}

fn system_prompt(who: &Consulted) -> String {
    let stance = match (&who.stance_prompt, who.stance) {
        (Some(own), _) if !own.trim().is_empty() => own.as_str(),
        (_, Stance::For) => STANCE_FOR,
        (_, Stance::Against) => STANCE_AGAINST,
        (_, Stance::Neutral) => STANCE_NEUTRAL,
    };
    PROMPT.replace("{stance}", stance.trim())
}

/// Where a model comes down on the proposal.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
enum Verdict {
    Support,
    Oppose,
    Mixed,
}

/// The verdict line a model gave, if it followed the format.
fn verdict_of(text: &str) -> Option<Verdict> {
    let after = text
        .split("## Verdict")
        .nth(1)
        .unwrap_or(text)
        .trim_start()
        .trim_start_matches(['*', '`']);
    [
        ("SUPPORT", Verdict::Support),
        ("OPPOSE", Verdict::Oppose),
        ("MIXED", Verdict::Mixed),
    ]
    .into_iter()
    .find_map(|(word, verdict)| after.starts_with(word).then_some(verdict))
}

/// One consulted model in the answer: who, with which stance, and how it came down.
#[derive(Serialize)]
struct ModelVerdict<'a> {
    model: &'a str,
    provider: &'a str,
    stance: Stance,
    #[serde(flatten)]
    outcome: Outcome<'a>,
}

/// Whether a consulted model answered (and its verdict, if it gave one in the format).
#[derive(Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
enum Outcome<'a> {
    Answered { verdict: Option<Verdict> },
    Failed { error: &'a str },
}

/// How many models came down where.
#[derive(Serialize)]
struct Tally {
    support: usize,
    oppose: usize,
    mixed: usize,
    failed: usize,
}

/// The consensus answer (the first content block and the structured content).
#[derive(Serialize)]
struct ConsensusAnswer<'a> {
    status: &'static str,
    continuation_id: &'a str,
    models_consulted: Vec<ModelVerdict<'a>>,
    tally: Tally,
    next_steps: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

/// Who answers: a model, or a coding-agent CLI run as a sub-agent (`cli:codex`).
#[derive(Clone)]
enum Voice {
    Model(Resolved),
    Cli {
        /// Boxed: a voice is mostly a model, and a model's voice is two pointers.
        spec: Box<crate::clink::CliSpec>,
        /// `cli:NAME`, its name in the answer and the record.
        label: String,
    },
}

impl Voice {
    /// The voice `model` names: `cli:NAME` a configured CLI, anything else a model.
    fn of(ctx: &ToolContext, model: &str) -> Result<Self, ToolFailure> {
        match model.strip_prefix("cli:") {
            Some(name) => Ok(Voice::Cli {
                spec: Box::new(super::clink::cli_named(ctx, name)?.clone()),
                label: model.to_string(),
            }),
            None => Ok(Voice::Model(consult::choose(ctx, Some(model), Need::Deep)?)),
        }
    }

    fn id(&self) -> &str {
        match self {
            Voice::Model(target) => &target.model.id,
            Voice::Cli { label, .. } => label,
        }
    }

    fn provider(&self) -> &str {
        match self {
            Voice::Model(target) => target.endpoint.name(),
            Voice::Cli { label, .. } => label,
        }
    }

    /// Asks this voice one blinded question.
    async fn ask(
        &self,
        ctx: &ToolContext,
        system: Cow<'static, str>,
        prompt: &str,
        files: Vec<String>,
        images: Vec<String>,
    ) -> Result<Answer, consult::Failed> {
        match self {
            Voice::Model(target) => {
                consult::ask(
                    ctx,
                    target.clone(),
                    &Question {
                        system,
                        prompt,
                        files,
                        thread: None,
                        temperature: None,
                        thinking: None,
                        web_search: false,
                        images,
                    },
                )
                .await
            }
            Voice::Cli { spec, label } => {
                super::clink::ask_cli(ctx, spec, label, &system, prompt, files, images).await
            }
        }
    }
}

fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        _ => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
    }
}

/// Why each model stopped, for the record: `stop` when all stopped normally, else each
/// model's reason (`glm-5: length, kimi-k3: stop`).
fn finish_reasons(answers: &[&Answer]) -> Option<String> {
    let reasons: Vec<(&str, &str)> = answers
        .iter()
        .filter_map(|a| {
            let reason = a.response.finish_reason.as_deref()?;
            Some((a.response.model.as_str(), reason))
        })
        .collect();
    let (_, first) = reasons.first()?;
    if reasons.iter().all(|(_, r)| r == first) {
        return Some(first.to_string());
    }
    let each: Vec<String> = reasons.iter().map(|(m, r)| format!("{m}: {r}")).collect();
    Some(each.join(", "))
}

/// Two usages added up.
fn plus(sum: Usage, u: Usage) -> Usage {
    Usage {
        tokens_in: add(sum.tokens_in, u.tokens_in),
        tokens_out: add(sum.tokens_out, u.tokens_out),
        reasoning_tokens: add(sum.reasoning_tokens, u.reasoning_tokens),
        cached_tokens: add(sum.cached_tokens, u.cached_tokens),
        time_to_first_token: sum.time_to_first_token.or(u.time_to_first_token),
        attempts: Some(sum.attempts.unwrap_or(0) + u.attempts.unwrap_or(0)),
        cost: sum.cost.plus(&u.cost),
    }
}

impl ExaiTool for Consensus {
    fn definition(&self) -> Tool {
        definition::<ConsensusArguments>(
            "consensus",
            "Ask several models at once to weigh a proposal, each blinded to the others and \
             given a stance (for, against, neutral); returns every verdict and a synthesis.",
            ToolAnnotations::new().read_only(true).open_world(true),
        )
    }

    fn may_run_long(&self) -> bool {
        true
    }

    fn system_prompts(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("consensus", PROMPT),
            ("consensus synthesis", SYNTHESIS_PROMPT),
            ("stance for", STANCE_FOR),
            ("stance against", STANCE_AGAINST),
            ("stance neutral", STANCE_NEUTRAL),
        ]
    }

    fn run(&self, arguments: JsonObject, ctx: ToolContext) -> ToolFuture {
        Box::pin(run(arguments, ctx))
    }
}

async fn run(arguments: JsonObject, ctx: ToolContext) -> Result<CallToolResult, ToolFailure> {
    let args: ConsensusArguments = parse_arguments("consensus", arguments)?;
    if let Some(answer) = consult::too_long(&ctx, "consensus", "step", &args.step) {
        return Ok(answer);
    }
    if args.step.trim().is_empty() {
        return Err(bad(
            "`step` is empty: give the proposal every model should weigh",
        ));
    }
    if args.models.len() < 2 {
        return Err(bad(format!(
            "consensus needs at least two models ({} given); for one model's view use chat",
            args.models.len()
        )));
    }
    if args.models.len() > MAX_MODELS {
        return Err(bad(format!(
            "at most {MAX_MODELS} models per consensus ({} given)",
            args.models.len()
        )));
    }
    if let Some(complaint) = consult::relative_path(&args.relevant_files) {
        return Err(bad(complaint));
    }
    let mut targets: Vec<(Voice, &Consulted)> = Vec::new();
    for who in &args.models {
        let target = Voice::of(&ctx, &who.model)?;
        if let Some((_, twin)) = targets.iter().find(|(t, w)| {
            t.id() == target.id() && t.provider() == target.provider() && w.stance == who.stance
        }) {
            return Err(bad(format!(
                "{} is listed twice with stance {} ({:?} and {:?}); give each model a different stance or drop one",
                target.id(),
                stance_name(who.stance),
                twin.model,
                who.model
            )));
        }
        targets.push((target, who));
    }
    let mut thread = consult::thread(&ctx, args.continuation_id.as_deref()).await?;

    // Which model stands where, named in the progress line as each one finishes (the
    // providers' own stage lines interleave while they run).
    let board = Arc::new(Board::new(targets.iter().map(|(t, _)| t.id().to_string())));
    ctx.call.progress.set_stage(board.line());
    let asks = targets.iter().enumerate().map(|(at, (target, who))| {
        let system = system_prompt(who);
        let ctx = ctx.clone();
        let target = target.clone();
        let files = args.relevant_files.clone();
        let proposal = args.step.clone();
        let images = args.images.clone();
        let board = board.clone();
        async move {
            let outcome = target
                .ask(&ctx, system.into(), &proposal, files, images)
                .await;
            board.done(at, outcome.is_ok());
            ctx.call.progress.set_stage(board.line());
            outcome
        }
    });
    let outcomes = join_all(asks).await;

    let mut verdicts = Vec::new();
    let mut texts = Vec::new();
    let mut answers = Vec::new();
    let mut spent = Usage::default();
    let mut notes = Vec::new();
    for ((target, who), outcome) in targets.iter().zip(&outcomes) {
        let stance = stance_name(who.stance);
        match outcome {
            Ok(answer) => {
                let verdict = verdict_of(&answer.response.text);
                verdicts.push(ModelVerdict {
                    model: &answer.response.model,
                    provider: &answer.response.provider,
                    stance: who.stance,
                    outcome: Outcome::Answered { verdict },
                });
                texts.push(format!(
                    "# {} ({stance})\n\n{}",
                    answer.response.model, answer.response.text
                ));
                notes.extend(
                    answer
                        .response
                        .notes
                        .iter()
                        .map(|n| format!("{}: {n}", answer.response.model)),
                );
                notes.extend(answer.notes());
                answers.push(answer);
            }
            Err(failed) => {
                spent = plus(spent, failed.usage.clone());
                verdicts.push(ModelVerdict {
                    model: target.id(),
                    provider: target.provider(),
                    stance: who.stance,
                    outcome: Outcome::Failed {
                        error: &failed.failure.message,
                    },
                });
                texts.push(format!(
                    "# {} ({stance}) — no answer\n\n{}",
                    target.id(),
                    failed.failure.message
                ));
            }
        }
    }
    if answers.is_empty() {
        ctx.call.set_usage(spent);
        let why: Vec<String> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().err().map(|f| f.failure.message.clone()))
            .collect();
        return Err(ToolFailure::new(
            FailureKind::AllModelsFailed,
            format!("no model answered the consensus:\n- {}", why.join("\n- ")),
        ));
    }
    notes.dedup();

    // The synthesis weighs the arguments; it is written by the first model that answered.
    let mut synthesis = None;
    let mut synthesis_answer = None;
    if args.synthesize == Some(false) {
        notes.push("No synthesis: it was not asked for (synthesize: false).".into());
    } else if answers.len() < 2 {
        notes.push(format!(
            "No synthesis: only {} model answered, and a synthesis weighs two or more evaluations.",
            answers.len()
        ));
    } else {
        let writer = targets
            .iter()
            .zip(&outcomes)
            .find(|(_, o)| o.is_ok())
            .map(|((t, _), _)| t.clone());
        if let Some(writer) = writer {
            ctx.call
                .progress
                .set_stage(format!("{} writing the synthesis", writer.id()));
            let mut prompt = format!("## Proposal\n{}\n\n", args.step);
            if let Some(own) = args.findings.as_deref().filter(|f| !f.trim().is_empty()) {
                prompt.push_str(&format!("## The asking agent's own analysis\n{own}\n\n"));
            }
            prompt.push_str("## Evaluations\n\n");
            prompt.push_str(&texts.join("\n\n"));
            match writer
                .ask(
                    &ctx,
                    SYNTHESIS_PROMPT.into(),
                    &prompt,
                    Vec::new(),
                    Vec::new(),
                )
                .await
            {
                Ok(answer) => {
                    synthesis = Some(answer.response.text.clone());
                    synthesis_answer = Some(answer);
                }
                Err(failed) => {
                    spent = plus(spent, failed.usage);
                    notes.push(format!(
                        "The synthesis could not be written: {}",
                        failed.failure.message
                    ));
                }
            }
        }
    }
    let mut all: Vec<&Answer> = answers.clone();
    all.extend(synthesis_answer.as_ref());
    let usage = all.iter().map(|a| a.usage()).fold(spent, plus);
    let cost = usage.cost.clone();
    ctx.call.set_usage(usage);
    let reasoning: Vec<String> = all
        .iter()
        .filter_map(|a| {
            a.response
                .reasoning
                .as_ref()
                .map(|r| format!("[{}]\n{r}", a.response.model))
        })
        .collect();
    if !reasoning.is_empty() {
        ctx.call.set_reasoning(Some(reasoning.join("\n\n")));
    }
    ctx.call.set_finish_reason(finish_reasons(&all));

    let count = |wanted: Verdict| {
        verdicts
            .iter()
            .filter(|v| matches!(v.outcome, Outcome::Answered { verdict: Some(given) } if given == wanted))
            .count()
    };
    let thread_id = thread.id.clone();
    let summary = ConsensusAnswer {
        status: "consensus_complete",
        continuation_id: &thread_id,
        tally: Tally {
            support: count(Verdict::Support),
            oppose: count(Verdict::Oppose),
            mixed: count(Verdict::Mixed),
            failed: outcomes.iter().filter(|o| o.is_err()).count(),
        },
        models_consulted: verdicts,
        next_steps: "Weigh the evaluations and the synthesis below against what you know of \
                     the project, then present the recommendation to the user with the main \
                     points of agreement and disagreement.",
        notes,
    };
    let mut summary = super::tool::to_json("answer", &summary)?;
    // Last, after what agents have always read first.
    summary["cost_usd"] = usd_json(cost.micros());
    let mut body = texts.join("\n\n");
    if let Some(s) = &synthesis {
        body.push_str(&format!("\n\n# Synthesis\n\n{s}"));
    }
    let cost_line = format!("Cost of this consensus: {cost}");
    let turns = vec![
        Turn::asked(
            "consensus",
            format!("Proposal for consensus: {}", args.step),
            args.relevant_files.clone(),
        ),
        Turn::answered("consensus", body.clone(), None, None),
    ];
    let memory_note = consult::remember(&ctx, &mut thread, turns).await;
    let mut result = CallToolResult::success(vec![
        ContentBlock::text(
            serde_json::to_string_pretty(&summary).unwrap_or_else(|_| summary.to_string()),
        ),
        ContentBlock::text(body),
        ContentBlock::text(cost_line),
    ]);
    result.content.extend(memory_note.map(ContentBlock::text));
    result.structured_content = Some(summary);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_read_from_the_verdict_section() {
        assert_eq!(
            verdict_of("## Verdict\nSUPPORT: yes\n## Analysis"),
            Some(Verdict::Support)
        );
        assert_eq!(
            verdict_of("## Verdict\n**OPPOSE**: no"),
            Some(Verdict::Oppose)
        );
        assert_eq!(verdict_of("MIXED: it depends"), Some(Verdict::Mixed));
        assert_eq!(verdict_of("I think it is fine"), None);
    }

    /// The answer's keys in the order agents have always read them.
    #[test]
    fn the_answer_keeps_its_wire_form() {
        let answer = ConsensusAnswer {
            status: "consensus_complete",
            continuation_id: "t",
            models_consulted: vec![
                ModelVerdict {
                    model: "a",
                    provider: "glm",
                    stance: Stance::For,
                    outcome: Outcome::Answered {
                        verdict: Some(Verdict::Support),
                    },
                },
                ModelVerdict {
                    model: "b",
                    provider: "kimi",
                    stance: Stance::Neutral,
                    outcome: Outcome::Answered { verdict: None },
                },
                ModelVerdict {
                    model: "c",
                    provider: "kimi",
                    stance: Stance::Against,
                    outcome: Outcome::Failed { error: "boom" },
                },
            ],
            tally: Tally {
                support: 1,
                oppose: 0,
                mixed: 0,
                failed: 1,
            },
            next_steps: "weigh",
            notes: Vec::new(),
        };
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            r#"{"status":"consensus_complete","continuation_id":"t","models_consulted":[{"model":"a","provider":"glm","stance":"for","status":"answered","verdict":"SUPPORT"},{"model":"b","provider":"kimi","stance":"neutral","status":"answered","verdict":null},{"model":"c","provider":"kimi","stance":"against","status":"failed","error":"boom"}],"tally":{"support":1,"oppose":0,"mixed":0,"failed":1},"next_steps":"weigh"}"#
        );
    }
}
