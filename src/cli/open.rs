//! `exai open`: the live page in the browser, through a one-time login link the running daemon
//! makes (asked with its token over its socket), so no token ever lands in the browser's history.

use std::io::Write;
use std::net::SocketAddr;

use crate::config::Config;
use crate::daemon::DaemonInfo;
use crate::daemon::control::{self, ControlError};

/// Why the page could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "no exai daemon is running for this EXAI_HOME: start it with `exai daemon` (a client \
         starts one too), then run `exai open` again"
    )]
    NotRunning,
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("the daemon's answer was not understood: {0}")]
    Answer(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The programs that open a link in the person's browser, tried in turn.
const OPENERS: [&str; 2] = ["xdg-open", "open"];

/// Asks the daemon for a login link and opens it in the browser (or, with `print_only` or no
/// browser to open it, prints it).
pub async fn open(
    config: &Config,
    print_only: bool,
    out: &mut impl Write,
) -> Result<(), OpenError> {
    let answer = match control::ask(config, "POST", "/api/login-code", true).await {
        Ok(answer) => answer,
        Err(ControlError::NotRunning(_)) => return Err(OpenError::NotRunning),
        Err(other) => return Err(other.into()),
    };
    let path = answer["path"]
        .as_str()
        .ok_or_else(|| OpenError::Answer(answer.to_string()))?;
    let info = DaemonInfo::read(config).ok_or(OpenError::NotRunning)?;
    let link = format!("http://{}{path}", browsable(&info.listen));
    if print_only {
        writeln!(out, "{link}")?;
        return Ok(());
    }
    if launched(&link).await {
        writeln!(
            out,
            "the live page is opening in your browser (http://{}/)",
            browsable(&info.listen)
        )?;
    } else {
        writeln!(
            out,
            "no browser could be opened here; open this link (it works once, within a minute):\n{link}"
        )?;
    }
    Ok(())
}

/// The address a browser reaches the daemon at: a daemon listening on every address is
/// reached on loopback.
fn browsable(listen: &str) -> String {
    match listen.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => format!("127.0.0.1:{}", addr.port()),
        _ => listen.to_string(),
    }
}

/// Whether an opener took the link.
async fn launched(link: &str) -> bool {
    for opener in OPENERS {
        let status = tokio::process::Command::new(opener)
            .arg(link)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await;
        if status.is_ok_and(|s| s.success()) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_on_every_address_is_browsed_on_loopback() {
        assert_eq!(browsable("0.0.0.0:8765"), "127.0.0.1:8765");
        assert_eq!(browsable("127.0.0.1:9"), "127.0.0.1:9");
        assert_eq!(browsable("[::1]:9"), "[::1]:9");
    }
}
