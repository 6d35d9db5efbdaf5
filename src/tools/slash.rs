//! The tools as MCP prompts (slash commands such as Claude Code's `/mcp__exai__chat`): what
//! `prompts/list` offers and the message `prompts/get` returns, which asks the agent to call the
//! tool with the person's arguments.

use rmcp::model::{GetPromptResult, JsonObject, Prompt, PromptArgument, PromptMessage, Role};
use serde_json::Value;

use super::ToolRegistry;

/// Why a `prompts/get` cannot be answered (the client gets it as invalid params, -32602).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlashError {
    #[error("no prompt is named {name:?}; the prompts are: {known}")]
    Unknown { name: String, known: String },
    #[error("the {prompt} prompt needs its {argument} argument ({what})")]
    Missing {
        prompt: &'static str,
        argument: &'static str,
        what: &'static str,
    },
    #[error("the {prompt} prompt takes {takes}, not {argument:?}")]
    Unexpected {
        prompt: &'static str,
        argument: String,
        takes: String,
    },
    #[error("the {prompt} prompt's {argument} argument must be {what}")]
    Invalid {
        prompt: &'static str,
        argument: &'static str,
        what: &'static str,
    },
}

/// Where an argument goes in the tool's arguments.
#[derive(Clone, Copy)]
enum Field {
    /// A text field, as typed.
    Text(&'static str),
    /// A list of names or paths, typed separated by spaces or commas.
    List(&'static str),
    /// A whole number.
    Whole(&'static str),
}

/// One argument a person types after the command.
struct Argument {
    name: &'static str,
    /// What to type, as the client shows it.
    what: &'static str,
    required: bool,
    into: Field,
}

/// How the agent starts the tool.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// One call with the arguments as they are.
    Call,
    /// Step 1 of a workflow: the agent adds the step bookkeeping and investigates between steps.
    Workflow,
}

/// One tool offered as a command.
struct Command {
    tool: &'static str,
    /// One line for the client's command menu.
    description: &'static str,
    start: Start,
    arguments: &'static [Argument],
}

const fn text(name: &'static str, what: &'static str, into: &'static str) -> Argument {
    Argument {
        name,
        what,
        required: true,
        into: Field::Text(into),
    }
}

const fn optional(argument: Argument) -> Argument {
    Argument {
        required: false,
        ..argument
    }
}

const MODEL: Argument = optional(text(
    "model",
    "the model to ask (a name or alias; default: the configured one)",
    "model",
));
const FILES: Argument = Argument {
    name: "files",
    what: "absolute paths of files to include, separated by spaces or commas",
    required: false,
    into: Field::List("relevant_files"),
};
const CALL_ID: Argument = text("call_id", "the call id exai gave", "call_id");

/// A workflow: the person's words become its first step.
const fn workflow(
    tool: &'static str,
    description: &'static str,
    arguments: &'static [Argument],
) -> Command {
    Command {
        tool,
        description,
        start: Start::Workflow,
        arguments,
    }
}

/// Every command, in the registry's order of tools; a tool without one has no command.
const COMMANDS: &[Command] = &[
    Command {
        tool: "chat",
        description: "Ask another model (GLM, Kimi, any OpenAI-compatible one) a question",
        start: Start::Call,
        arguments: &[
            text("prompt", "what to ask", "prompt"),
            MODEL,
            Argument {
                into: Field::List("files"),
                ..FILES
            },
        ],
    },
    workflow(
        "thinkdeep",
        "Think a hard problem through in steps, challenged by another model at the end",
        &[
            text("problem", "the problem to think through", "step"),
            FILES,
            MODEL,
        ],
    ),
    workflow(
        "debug",
        "Find a bug's root cause in steps, weighed by another model at the end",
        &[
            text("issue", "the bug: what happens, what should", "step"),
            FILES,
            MODEL,
        ],
    ),
    workflow(
        "analyze",
        "Analyse code in steps (architecture, performance, security, quality)",
        &[
            text("what", "the code and what to learn about it", "step"),
            FILES,
            MODEL,
        ],
    ),
    workflow(
        "codereview",
        "Review code in steps, with another model's review at the end",
        &[
            text("what", "what to review and what matters most", "step"),
            FILES,
            MODEL,
        ],
    ),
    workflow(
        "precommit",
        "Check the changes of a git repository before committing",
        &[
            text("what", "what the changes are for", "step"),
            optional(text("path", "the repository's absolute path", "path")),
            MODEL,
        ],
    ),
    workflow(
        "refactor",
        "Find refactoring opportunities in steps",
        &[
            text("what", "the code to improve and why", "step"),
            FILES,
            MODEL,
        ],
    ),
    workflow(
        "testgen",
        "Plan and write tests for code in steps",
        &[text("what", "the code to test", "step"), FILES, MODEL],
    ),
    workflow(
        "secaudit",
        "Audit code for security in steps",
        &[
            text("what", "the code to audit and its threats", "step"),
            FILES,
            MODEL,
        ],
    ),
    workflow(
        "docgen",
        "Document code file by file",
        &[text("what", "the code to document", "step"), FILES],
    ),
    workflow(
        "tracer",
        "Trace a method's execution flow or a module's dependencies",
        &[text("what", "the method or module to trace", "step"), FILES],
    ),
    workflow(
        "planner",
        "Plan a task step by step",
        &[text("task", "the task to plan", "step")],
    ),
    Command {
        tool: "consensus",
        description: "Ask several models at once to weigh a proposal",
        start: Start::Call,
        arguments: &[
            text("proposal", "the proposal or question to weigh", "step"),
            Argument {
                name: "models",
                what: "the models to ask, separated by spaces or commas",
                required: true,
                into: Field::List("models"),
            },
            FILES,
        ],
    },
    Command {
        tool: "clink",
        description: "Hand a task to another coding agent (Claude Code, Codex, Gemini CLI)",
        start: Start::Call,
        arguments: &[
            text("prompt", "the task for the sub-agent", "prompt"),
            optional(text(
                "cli_name",
                "claude, codex, gemini or one configured",
                "cli_name",
            )),
            optional(text(
                "role",
                "default, planner, codereviewer or one configured",
                "role",
            )),
            Argument {
                into: Field::List("files"),
                ..FILES
            },
        ],
    },
    Command {
        tool: "challenge",
        description: "Reassess a claim critically instead of agreeing by reflex",
        start: Start::Call,
        arguments: &[text("claim", "the claim or pushback to reassess", "prompt")],
    },
    Command {
        tool: "call_result",
        description: "Get the answer of a call that outlived its client",
        start: Start::Call,
        arguments: &[CALL_ID],
    },
    Command {
        tool: "call_cancel",
        description: "Stop a running call",
        start: Start::Call,
        arguments: &[CALL_ID],
    },
    Command {
        tool: "call_list",
        description: "List this client's recent calls",
        start: Start::Call,
        arguments: &[Argument {
            name: "limit",
            what: "how many calls to list",
            required: false,
            into: Field::Whole("limit"),
        }],
    },
    Command {
        tool: "threads",
        description: "Find a conversation again by words from its first question",
        start: Start::Call,
        arguments: &[optional(text(
            "find",
            "words from the conversation's first question",
            "find",
        ))],
    },
    Command {
        tool: "listmodels",
        description: "List the model providers and their models",
        start: Start::Call,
        arguments: &[],
    },
    Command {
        tool: "status",
        description: "exai's health: calls in flight and recent failures",
        start: Start::Call,
        arguments: &[],
    },
    Command {
        tool: "version",
        description: "exai's version and how this session reaches it",
        start: Start::Call,
        arguments: &[],
    },
];

fn command(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.tool == name)
}

/// The prompts of the tools `registry` offers, in its order (a disabled tool has none).
pub fn prompts(registry: &ToolRegistry) -> Vec<Prompt> {
    registry
        .definitions()
        .iter()
        .filter_map(|tool| command(&tool.name))
        .map(|command| {
            let arguments = command
                .arguments
                .iter()
                .map(|a| {
                    PromptArgument::new(a.name)
                        .with_description(a.what)
                        .with_required(a.required)
                })
                .collect();
            Prompt::new(command.tool, Some(command.description), Some(arguments))
        })
        .collect()
}

/// `prompts/get`: the message that asks the agent to call `name` with `given`.
pub fn get(
    registry: &ToolRegistry,
    name: &str,
    given: Option<&JsonObject>,
) -> Result<GetPromptResult, SlashError> {
    let Some(command) = command(name).filter(|_| registry.get(name).is_some()) else {
        let known: Vec<String> = prompts(registry).into_iter().map(|p| p.name).collect();
        return Err(SlashError::Unknown {
            name: name.chars().take(64).collect(),
            known: known.join(", "),
        });
    };
    let empty = JsonObject::new();
    let given = given.unwrap_or(&empty);
    if let Some(stray) = given
        .keys()
        .find(|key| !command.arguments.iter().any(|a| a.name == key.as_str()))
    {
        let takes: Vec<&str> = command.arguments.iter().map(|a| a.name).collect();
        return Err(SlashError::Unexpected {
            prompt: command.tool,
            argument: stray.chars().take(64).collect(),
            takes: if takes.is_empty() {
                "no arguments".into()
            } else {
                takes.join(", ")
            },
        });
    }
    let mut arguments = JsonObject::new();
    for argument in command.arguments {
        // Clients may send every declared argument, the ones left out as empty strings.
        let typed = match given.get(argument.name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(s.trim()),
            Some(_) => {
                return Err(SlashError::Invalid {
                    prompt: command.tool,
                    argument: argument.name,
                    what: "a string",
                });
            }
        };
        let Some(typed) = typed else {
            if argument.required {
                return Err(SlashError::Missing {
                    prompt: command.tool,
                    argument: argument.name,
                    what: argument.what,
                });
            }
            continue;
        };
        let (field, value) = match argument.into {
            Field::Text(field) => (field, Value::String(typed.to_string())),
            Field::List(field) => (
                field,
                typed
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|item| !item.is_empty())
                    .map(|item| Value::String(item.to_string()))
                    .collect(),
            ),
            Field::Whole(field) => match typed.parse::<u64>() {
                Ok(n) => (field, Value::from(n)),
                Err(_) => {
                    return Err(SlashError::Invalid {
                        prompt: command.tool,
                        argument: argument.name,
                        what: "a whole number",
                    });
                }
            },
        };
        arguments.insert(field.to_string(), value);
    }
    let json = serde_json::to_string_pretty(&Value::Object(arguments)).unwrap_or_default();
    let tool = command.tool;
    let text = match command.start {
        Start::Call => {
            format!("Call exai's `{tool}` tool with these arguments:\n\n```json\n{json}\n```")
        }
        Start::Workflow => format!(
            "Start exai's `{tool}` workflow: call the `{tool}` tool for step 1 with these \
             arguments, adding `step_number` 1, your estimate of `total_steps`, \
             `next_step_required` and your `findings`; then investigate between steps as the \
             tool asks.\n\n```json\n{json}\n```"
        ),
    };
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
            .with_description(command.description),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(value: Value) -> JsonObject {
        value.as_object().cloned().unwrap_or_default()
    }

    /// The JSON block of a prompt's message: the arguments the agent is asked to call with.
    fn called_with(result: &GetPromptResult) -> Value {
        let text = serde_json::to_value(&result.messages[0].content).unwrap()["text"]
            .as_str()
            .unwrap()
            .to_string();
        let json = text
            .split("```json\n")
            .nth(1)
            .unwrap()
            .split("\n```")
            .next()
            .unwrap();
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn every_tool_is_a_command_in_the_registry_order() {
        let registry = ToolRegistry::default();
        let names: Vec<String> = prompts(&registry).into_iter().map(|p| p.name).collect();
        let tools: Vec<String> = registry
            .definitions()
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        assert_eq!(names, tools);
    }

    #[test]
    fn the_message_carries_the_tool_arguments_typed() {
        let registry = ToolRegistry::default();
        let chat = get(
            &registry,
            "chat",
            Some(&args(serde_json::json!({
                "prompt": " Is it safe? ", "model": "", "files": "/a/x.rs, /a/y.rs /a/z.rs"
            }))),
        )
        .unwrap();
        assert_eq!(
            called_with(&chat),
            serde_json::json!({"prompt": "Is it safe?", "files": ["/a/x.rs", "/a/y.rs", "/a/z.rs"]})
        );
        let review = get(
            &registry,
            "codereview",
            Some(&args(
                serde_json::json!({"what": "the parser", "files": "/p/a.rs"}),
            )),
        )
        .unwrap();
        assert_eq!(
            called_with(&review),
            serde_json::json!({"step": "the parser", "relevant_files": ["/p/a.rs"]})
        );
        let list = get(
            &registry,
            "call_list",
            Some(&args(serde_json::json!({"limit": "3"}))),
        )
        .unwrap();
        assert_eq!(called_with(&list), serde_json::json!({"limit": 3}));
    }

    #[test]
    fn wrong_arguments_are_refused_with_what_is_wrong() {
        let registry = ToolRegistry::default();
        let missing = get(&registry, "chat", None).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "the chat prompt needs its prompt argument (what to ask)"
        );
        let stray = get(
            &registry,
            "version",
            Some(&args(serde_json::json!({"x": "1"}))),
        )
        .unwrap_err();
        assert_eq!(
            stray.to_string(),
            "the version prompt takes no arguments, not \"x\""
        );
        let number = get(
            &registry,
            "call_list",
            Some(&args(serde_json::json!({"limit": "ten"}))),
        );
        assert!(
            matches!(number, Err(SlashError::Invalid { .. })),
            "{number:?}"
        );
        let typed = get(
            &registry,
            "chat",
            Some(&args(serde_json::json!({"prompt": 3}))),
        );
        assert!(
            matches!(typed, Err(SlashError::Invalid { .. })),
            "{typed:?}"
        );
    }

    #[test]
    fn a_disabled_tool_has_no_prompt() {
        let registry = ToolRegistry::new(&["chat".to_string()]);
        assert!(!prompts(&registry).iter().any(|p| p.name == "chat"));
        let refused = get(
            &registry,
            "chat",
            Some(&args(serde_json::json!({"prompt": "p"}))),
        );
        assert!(
            matches!(&refused, Err(SlashError::Unknown { known, .. }) if !known.contains("chat,") && known.contains("thinkdeep")),
            "{refused:?}"
        );
    }
}
