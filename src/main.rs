//! The `exai` command line: daemon, stdio, calls, threads, config, keys, users, setup, reload, open, status, doctor.
// The top of the program: the one place that prints an error to stderr and exits.
#![allow(clippy::print_stderr)]

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;

use clap::{Parser, Subcommand};

use exai::config::Config;
use exai::store::CallFilter;

#[global_allocator]
static ALLOCATOR: exai::allocator::ByRole = exai::allocator::ByRole;

#[derive(Parser)]
#[command(
    name = "exai",
    version,
    about = "An MCP server that gives coding agents a team of other models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What to do with the running daemon.
#[derive(Subcommand)]
enum DaemonAction {
    /// Stop the daemon of this EXAI_HOME: calls in flight get the shutdown grace, and what was
    /// still running is named.
    Stop,
    /// Stop it as `stop` does, then start it again on the same address (with the config and
    /// keys as they are now).
    Restart,
}

#[derive(Subcommand)]
enum Command {
    /// Run the shared server (WebSocket /ws, Streamable HTTP /mcp, /healthz); or stop or restart it.
    #[command(args_conflicts_with_subcommands = true)]
    Daemon {
        #[command(subcommand)]
        action: Option<DaemonAction>,
        /// Address to listen on (default 127.0.0.1:8765; env EXAI_LISTEN).
        #[arg(long)]
        listen: Option<String>,
        /// Allow a non-loopback --listen address.
        #[arg(long)]
        allow_remote: bool,
    },
    /// Speak MCP on stdin/stdout (what MCP clients launch).
    Stdio {
        /// Serve in this process instead of relaying to the daemon.
        #[arg(long)]
        no_daemon: bool,
    },
    /// Recent calls, or one call in full.
    Calls {
        #[command(subcommand)]
        show: Option<CallsCommand>,
        /// Only failed, timed out, cancelled or interrupted calls.
        #[arg(long)]
        failed: bool,
        /// Only calls still running.
        #[arg(long)]
        running: bool,
        /// Only calls of this tool.
        #[arg(long)]
        tool: Option<String>,
        /// How many calls to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON (for scripts) instead of a table.
        #[arg(long)]
        json: bool,
        /// Stream calls as they start and end, one line each, until Ctrl-C.
        #[arg(long, conflicts_with_all = ["json", "failed", "running"])]
        follow: bool,
    },
    /// Conversations, most recently continued first (first prompt, tools, turns, last activity,
    /// cost); words find those whose first prompt holds them all; or one thread in full.
    #[command(args_conflicts_with_subcommands = true)]
    Threads {
        #[command(subcommand)]
        action: Option<ThreadsCommand>,
        /// Words the first prompt must hold (all of them, any case, matched literally).
        words: Vec<String>,
        /// The same, as one argument: `--find "flaky test"`.
        #[arg(long, value_name = "WORDS")]
        find: Option<String>,
        /// Only threads continued since: days (7d), hours (12h) or a UTC date (2026-11-01).
        #[arg(long)]
        since: Option<String>,
        /// How many threads to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON (for scripts) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a tool through the daemon (started if needed) with a live progress bar, then print
    /// its answer; Ctrl-C cancels the call; a tool error exits non-zero.
    Call {
        /// The tool, e.g. chat, listmodels, thinkdeep.
        tool: String,
        /// One argument (repeat it); the value is JSON unless the tool wants text there.
        /// Without any, a JSON object of arguments is read from stdin when it is not a terminal.
        #[arg(long = "arg", value_name = "NAME=VALUE")]
        args: Vec<String>,
        /// Print the whole result as JSON.
        #[arg(long)]
        json: bool,
        /// Show the exact request(s) the tool would send to the model (secrets masked) and send
        /// nothing: no model request, no document upload.
        #[arg(long)]
        dry_run: bool,
    },
    /// What calls cost and the tokens they used, by day, model, tool, client and user, with totals.
    Usage {
        /// From when: days (7d), hours (12h) or a UTC date (2026-11-01); the last 7 days by default.
        #[arg(long)]
        since: Option<String>,
        /// Only one grouping: day, model, tool, client or user.
        #[arg(long, value_parser = parse_usage_by)]
        by: Option<exai::store::UsageBy>,
        /// Print JSON (for scripts) instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// The effective configuration: every setting, where it came from, the providers (keys hidden).
    Config {
        /// Print JSON (for scripts) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Provider API keys in the keys file (keys.toml beside the config file, mode 0600).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The people of a shared exai: personal tokens (shown once, stored hashed), admins, revoking.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Write exai into an MCP client's configuration (claude, codex, cursor, gemini, auggie),
    /// see which clients are installed and set up (--list), or take exai out again (--remove).
    Setup(exai::cli::setup::Request),
    /// Make the running daemon read its config and keys files again now (it also follows them
    /// by itself); says which settings changed.
    Reload,
    /// Open the live page (calls in flight, recent calls, charts) in the browser, through a
    /// one-time login link from the running daemon.
    Open {
        /// Print the link instead of opening a browser (it works once, within a minute).
        #[arg(long)]
        print: bool,
    },
    /// Is the daemon up, what is running, what failed lately.
    Status {
        /// Print JSON (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check everything exai needs (versions, daemon, files, store, each provider answering,
    /// the default model, disk) and say how to fix what does not work; fails if anything used fails.
    Doctor {
        /// Print JSON (for scripts): every check and a summary.
        #[arg(long)]
        json: bool,
        /// Seconds each provider gets to answer its model list.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Store a provider's key: read from stdin when piped, else typed at a prompt (not shown).
    Set {
        /// glm, kimi, openai, openrouter or custom.
        provider: String,
    },
    /// Each provider: whether a key is set (masked) and where it comes from.
    List {
        /// Print JSON (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove a provider's key from the keys file.
    Rm {
        /// glm, kimi, openai, openrouter or custom.
        provider: String,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a user and print their personal token (once: only its hash is kept).
    Add {
        /// 1 to 32 lowercase letters, digits, '.', '_' or '-'.
        name: String,
        /// An admin sees every user's calls and threads.
        #[arg(long)]
        admin: bool,
    },
    /// Every user: admin or not, when added, when revoked (never a token).
    List {
        /// Print JSON (for scripts) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop a user's token from working (their records stay).
    Revoke { name: String },
}

#[derive(Subcommand)]
enum CallsCommand {
    /// Everything about one call: record, answer or error, log lines.
    Show {
        /// The call id (its unique first or last few characters are enough).
        id: String,
        /// Print JSON (for scripts): the record and its log lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ThreadsCommand {
    /// One thread as Markdown: each turn's author, tool, model, time and text.
    Show {
        /// The thread's continuation id (its unique first or last few characters are enough).
        id: String,
        /// md (the default) or json.
        #[arg(long, value_enum, default_value = "md")]
        format: exai::cli::threads::Format,
        /// The same as --format json.
        #[arg(long)]
        json: bool,
    },
    /// One thread complete, as JSON (for scripts), or as Markdown.
    Export {
        /// The thread's continuation id (its unique first or last few characters are enough).
        id: String,
        /// json (the default) or md.
        #[arg(long, value_enum, default_value = "json")]
        format: exai::cli::threads::Format,
    },
}

fn parse_usage_by(text: &str) -> Result<exai::store::UsageBy, String> {
    exai::store::UsageBy::parse(text)
        .ok_or_else(|| format!("{text:?}: expected day, model, tool, client or user"))
}

/// The error and its causes, each cause said once (many messages already quote their cause).
fn without_repeats(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Arguments for `exai call` as a JSON object on stdin (at most 16 MiB).
fn read_stdin() -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::io::stdin()
        .lock()
        .take(16 << 20)
        .read_to_string(&mut text)?;
    Ok(text)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `exai` alone, typed at a terminal, is a first run: say what exai is and what is next.
        // Anywhere else (a script, a misconfigured client) it stays clap's usage error.
        Err(_) if std::env::args_os().len() == 1 && std::io::stdin().is_terminal() => {
            return match exai::cli::welcome(&mut shown(std::io::stdout().lock())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            };
        }
        Err(error) => error.exit(),
    };
    // The relay is one small event loop: a single thread spares it cross-thread wake-ups.
    let relay = matches!(cli.command, Command::Stdio { no_daemon: false });
    let mut builder = if relay {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("exai: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdio = matches!(cli.command, Command::Stdio { .. });
    let code = match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "exai: {}",
                exai::cli::safe_output::shown(&without_repeats(&e))
            );
            match e.downcast_ref::<exai::daemon::DaemonError>() {
                Some(exai::daemon::DaemonError::AlreadyRunning { .. }) => {
                    ExitCode::from(exai::daemon::EXIT_BUSY)
                }
                _ => ExitCode::FAILURE,
            }
        }
    };
    if stdio {
        // stdin may still be held by a blocking reader thread: do not wait for it.
        std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 });
    }
    code
}

/// The configuration; when its files cannot be used, the environment's alone (where the home
/// and the daemon are) and why the files could not.
fn config_or_environment() -> anyhow::Result<(Config, Option<exai::config::ConfigError>)> {
    match Config::from_env() {
        Ok(config) => Ok((config, None)),
        Err(error) => Ok((Config::from_lookup(exai::config::process_env)?, Some(error))),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Daemon {
            action: Some(action),
            ..
        } => {
            let config = Config::from_env()?;
            let stopping = config.clone();
            let stopped =
                exai::spawn::blocking(move || exai::daemon::control::stop(&stopping)).await??;
            exai::cli::daemon_control::report(&stopped, &mut shown(std::io::stdout().lock()))?;
            if matches!(action, DaemonAction::Restart) {
                let info = exai::cli::daemon_control::start_again(config, stopped.as_ref()).await?;
                writeln!(
                    shown(std::io::stdout().lock()),
                    "started the exai daemon (pid {}, version {}) on {}",
                    info.pid,
                    info.version,
                    info.listen
                )?;
            }
        }
        Command::Daemon {
            action: None,
            listen,
            allow_remote,
        } => {
            let mut config = Config::from_env()?;
            if let Some(listen) = listen {
                config.listen = exai::config::parse_listen(&listen)
                    .map_err(|why| anyhow::anyhow!("--listen {listen:?}: {why}"))?;
            }
            exai::tools::ToolRegistry::check_settings(&config)?;
            exai::daemon::prepare_home(&config)?;
            let _guard = exai::logging::init(Some(&config.log_dir()), false);
            exai::daemon::run(config, allow_remote).await?;
        }
        Command::Stdio { no_daemon } => {
            let config = Config::from_env()?;
            if no_daemon {
                exai::tools::ToolRegistry::check_settings(&config)?;
                std::fs::create_dir_all(config.log_dir())
                    .with_context(|| format!("cannot create {}", config.log_dir().display()))?;
                let _guard = exai::logging::init(Some(&config.log_dir()), true);
                exai::local::run(config).await?;
            } else {
                let _guard = exai::logging::init(None, true);
                exai::shim::run(config).await?;
            }
        }
        Command::Call {
            tool,
            args,
            json,
            dry_run,
        } => {
            let stdin_json = if args.is_empty() && !std::io::stdin().is_terminal() {
                Some(exai::spawn::blocking(read_stdin).await??)
            } else {
                None
            };
            let request = exai::cli::call::CallRequest {
                tool,
                args,
                stdin_json,
                json,
                dry_run,
            };
            exai::cli::call::run(request, &mut shown(std::io::stdout())).await?;
        }
        Command::Calls {
            show,
            failed,
            running,
            tool,
            limit,
            json,
            follow,
        } => {
            let config = Config::from_env()?;
            if follow && show.is_none() {
                return Ok(
                    exai::cli::follow::follow(&config, tool, &mut shown(std::io::stdout())).await?,
                );
            }
            // The store is read on a blocking thread: the Postgres client blocks on a runtime
            // of its own, which cannot run on this one's thread.
            exai::spawn::blocking(move || {
                let mut out = shown(std::io::stdout().lock());
                match show {
                    Some(CallsCommand::Show { id, json }) => {
                        exai::cli::show_call(&config, &id, json, &mut out)
                    }
                    None => {
                        let filter = CallFilter {
                            failed_only: failed,
                            running_only: running,
                            tool,
                            limit,
                            ..Default::default()
                        };
                        exai::cli::list_calls(&config, &filter, json, &mut out)
                    }
                }
            })
            .await??;
        }
        Command::Threads {
            action,
            words,
            find,
            since,
            limit,
            json,
        } => {
            let config = Config::from_env()?;
            let since_ms = match since.as_deref() {
                Some(text) => Some(
                    exai::cli::usage::since_ms(Some(text), exai::store::now_ms())
                        .map_err(anyhow::Error::msg)?,
                ),
                None => None,
            };
            // On a blocking thread, like `calls`: the Postgres client cannot run on this one's.
            exai::spawn::blocking(move || {
                let mut out = shown(std::io::stdout().lock());
                match action {
                    Some(ThreadsCommand::Show { id, format, json }) => {
                        let format = match json {
                            true => exai::cli::threads::Format::Json,
                            false => format,
                        };
                        exai::cli::threads::show(&config, &id, format, &mut out)
                    }
                    Some(ThreadsCommand::Export { id, format }) => {
                        exai::cli::threads::show(&config, &id, format, &mut out)
                    }
                    None => {
                        let filter = exai::store::ThreadFilter {
                            since_ms,
                            words: words
                                .iter()
                                .chain(find.iter())
                                .flat_map(|w| w.split_whitespace())
                                .map(str::to_string)
                                .collect(),
                            limit,
                            ..Default::default()
                        };
                        exai::cli::threads::list(&config, &filter, json, &mut out)
                    }
                }
            })
            .await??;
        }
        Command::Usage { since, by, json } => {
            let config = Config::from_env()?;
            let since = exai::cli::usage::since_ms(since.as_deref(), exai::store::now_ms())
                .map_err(anyhow::Error::msg)?;
            // On a blocking thread, like `calls`: the Postgres client cannot run on this one's.
            exai::spawn::blocking(move || {
                exai::cli::usage::usage(
                    &config,
                    since,
                    by,
                    json,
                    &mut shown(std::io::stdout().lock()),
                )
            })
            .await??;
        }
        Command::Config { json } => {
            let config = Config::from_env()?;
            exai::tools::ToolRegistry::check_settings(&config)?;
            exai::cli::show_config(&config, json, &mut shown(std::io::stdout().lock()))?;
        }
        Command::Keys { command } => {
            let path = exai::cli::keys::keys_file()?;
            let mut out = shown(std::io::stdout().lock());
            match command {
                KeysCommand::Set { provider } => exai::cli::keys::set(&path, &provider, &mut out)?,
                KeysCommand::List { json } => exai::cli::keys::list(&path, json, &mut out)?,
                KeysCommand::Rm { provider } => {
                    exai::cli::keys::remove(&path, &provider, &mut out)?
                }
            }
        }
        Command::Users { command } => {
            let config = Config::from_env()?;
            // On a blocking thread, like `calls`: the Postgres client cannot run on this one's.
            exai::spawn::blocking(move || {
                let mut out = shown(std::io::stdout().lock());
                match command {
                    UsersCommand::Add { name, admin } => {
                        exai::cli::users::add(&config, &name, admin, &mut out)
                    }
                    UsersCommand::List { json } => exai::cli::users::list(&config, json, &mut out),
                    UsersCommand::Revoke { name } => {
                        exai::cli::users::revoke(&config, &name, &mut out)
                    }
                }
            })
            .await??;
        }
        Command::Setup(request) => {
            let config = Config::from_env()?;
            // A client's own CLI may run: on a blocking thread.
            exai::spawn::blocking(move || {
                exai::cli::setup::run(&config, &request, &mut shown(std::io::stdout().lock()))
            })
            .await??;
        }
        Command::Reload => {
            // A broken file is the daemon's to report: reaching it needs only EXAI_HOME.
            let (config, _) = config_or_environment()?;
            exai::cli::daemon_control::reload(&config, &mut shown(std::io::stdout().lock()))
                .await?;
        }
        Command::Open { print } => {
            let (config, _) = config_or_environment()?;
            exai::cli::open::open(&config, print, &mut shown(std::io::stdout().lock())).await?;
        }
        Command::Status { json } => {
            let (config, unreadable) = config_or_environment()?;
            let mut out = shown(std::io::stdout().lock());
            if let Some(error) = unreadable.filter(|_| !json) {
                writeln!(
                    out,
                    "config: {error} (status below from the environment alone)"
                )?;
            }
            exai::cli::status(&config, json, &mut out).await?;
        }
        Command::Doctor { json, timeout } => {
            let timeout = std::time::Duration::try_from_secs_f64(timeout)
                .ok()
                .filter(|t| !t.is_zero())
                .ok_or_else(|| anyhow::anyhow!("--timeout {timeout}: expected seconds above 0"))?;
            let scene = exai::cli::doctor::Scene::from_env(timeout);
            let checks = exai::cli::doctor::examine(&scene).await;
            exai::cli::doctor::report(&checks, json, &mut shown(std::io::stdout().lock()))?;
            if !exai::cli::doctor::healthy(&checks) {
                anyhow::bail!("doctor: something exai uses does not work (see FAIL and its fix)");
            }
        }
    }
    Ok(())
}

/// Standard output for what a command prints: control characters in it (from records, answers
/// and threads, which outside text fills) are shown, not obeyed by the terminal.
fn shown<W: Write>(stdout: W) -> exai::cli::safe_output::SafeOutput<W> {
    exai::cli::safe_output::SafeOutput::new(stdout)
}
