//! Logging set-up: human lines to stderr, JSON lines to a rotating file.

mod batched_writer;
mod json_line;

use std::io::IsTerminal;
use std::path::Path;

use tracing::Level;

pub use batched_writer::write_now;
use batched_writer::{Destination, WriterGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::Filter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Default filter: our own events at info, the libraries' chatter at warn.
const DEFAULT_FILTER: &str =
    "info,rmcp=warn,hyper=warn,reqwest=warn,tungstenite=warn,tokio_tungstenite=warn";
/// Daily log files kept.
const KEPT_LOG_FILES: usize = 7;

/// The user's filter (`EXAI_LOG`, `RUST_LOG`) or `default`, never letting through the
/// libraries' debug dumps of whole messages and headers, which carry arguments and keys.
///
/// `users_choice` false: `default` whatever the user set.
fn filter<S>(default: &str, users_choice: bool) -> impl Filter<S> {
    let chosen = users_choice
        .then(users_filter)
        .flatten()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    chosen.and(filter_fn(|meta| {
        let dumps_payloads = ["rmcp", "hyper", "reqwest", "h2", "tungstenite", "axum"]
            .iter()
            .any(|lib| meta.target().starts_with(lib));
        !(dumps_payloads && *meta.level() > Level::INFO)
    }))
}

/// The filter the user set (`EXAI_LOG`, else `RUST_LOG`), if any.
fn users_filter() -> Option<String> {
    std::env::var("EXAI_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
}

/// What keeps logging's writer threads: on drop they write what is waiting and stop.
pub struct LogGuard {
    _file: Option<WriterGuard>,
    _stderr: Option<WriterGuard>,
}

/// Logs to stderr and, when `log_dir` is given, to `log_dir/exai.log.YYYY-MM-DD` as JSON lines.
///
/// Keep the returned guard alive: it flushes the writers on drop.
pub fn init(log_dir: Option<&Path>, quiet_stderr: bool) -> LogGuard {
    // Detached (stderr is a file): the JSON log is the record, stderr keeps the warnings.
    let quiet_stderr = quiet_stderr || !std::io::stderr().is_terminal();
    let stderr_is_null = stderr_is_null();
    let stderr_filter = if stderr_is_null {
        // Lines written to /dev/null would still be formatted, a few of them for every call.
        // The layer stays, filtered off: without it (a `None` layer) every library's debug and
        // trace call site was put to the filters on every call, 713k instructions a call
        // against 583k (scripts/instructions-per-call).
        filter("off", false)
    } else if quiet_stderr {
        filter("warn", true)
    } else {
        filter(DEFAULT_FILTER, true)
    };
    // Written by a thread of its own: stderr is often a pipe to the MCP client, which may never
    // read it, and a full pipe would block the task that logged (and the calls behind it).
    let (stderr_writer, stderr_guard) = match stderr_is_null {
        true => (BoxMakeWriter::new(std::io::sink), None),
        false => match batched_writer::start(std::io::stderr(), Destination::Stderr) {
            Ok((writer, guard)) => (BoxMakeWriter::new(writer), Some(guard)),
            // No thread to be had: lines are written as they come.
            Err(_) => (BoxMakeWriter::new(std::io::stderr), None),
        },
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(stderr_writer)
        .with_ansi(false)
        .with_target(false)
        .with_filter(stderr_filter);
    let (file_layer, file_guard) = match log_dir.and_then(|dir| {
        tracing_appender::rolling::Builder::new()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix("exai.log")
            .max_log_files(KEPT_LOG_FILES)
            .build(dir)
            .ok()
            .and_then(|appender| batched_writer::start(appender, Destination::JsonFile).ok())
    }) {
        Some((writer, guard)) => {
            let layer = tracing_subscriber::fmt::layer()
                .fmt_fields(json_line::JsonMembers)
                .event_format(json_line::JsonLine)
                .with_writer(writer)
                .with_filter(filter(DEFAULT_FILTER, true));
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .try_init();
    // The bridge from the `log` crate is set to pass everything; without a filter of the
    // user's, nothing below info gets through ours, so libraries need not build those records.
    log::set_max_level(if users_filter().is_some() {
        log::LevelFilter::Trace
    } else {
        log::LevelFilter::Info
    });
    LogGuard {
        _file: file_guard,
        _stderr: stderr_guard,
    }
}

use tracing_subscriber::Layer;

/// Whether this process's stderr is /dev/null (a daemon started with its output discarded).
fn stderr_is_null() -> bool {
    use std::os::fd::AsFd;
    std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .is_ok_and(|fd| is_null(&std::fs::File::from(fd)))
}

/// Whether `file` is the null device.
fn is_null(file: &std::fs::File) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match (file.metadata(), std::fs::metadata("/dev/null")) {
        // The same character device (1:3), wherever its node is.
        (Ok(stderr), Ok(null)) => {
            stderr.file_type().is_char_device()
                && null.file_type().is_char_device()
                && stderr.rdev() == null.rdev()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dev_null_is_taken_for_discarded_output() {
        assert!(is_null(&std::fs::File::open("/dev/null").unwrap()));
        assert!(!is_null(&std::fs::File::open("/dev/zero").unwrap()));
        let path = std::env::temp_dir().join(format!("exai-not-null-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        assert!(!is_null(&file));
        std::fs::remove_file(&path).unwrap();
    }
}
