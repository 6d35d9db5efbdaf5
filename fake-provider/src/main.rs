//! `exai-fake-provider`: the fake provider as a process (for the Python tests and scripts).
//! On start it prints exactly one line, `LISTENING http://<addr>`, to stdout.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::net::SocketAddr;

use clap::Parser;
use exai_fake_provider::{FIXTURES, Options, serve};
use tokio::net::TcpListener;

#[derive(Parser, Debug)]
#[command(
    name = "exai-fake-provider",
    about = "OpenAI-compatible fake LLM server, scripted by model name"
)]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Require `Authorization: Bearer <KEY>` on chat-completion requests.
    #[arg(long, value_name = "KEY")]
    require_key: Option<String>,
    /// Where `fake-fixture-*` models find the provider fixtures.
    #[arg(long, value_name = "DIR", default_value = FIXTURES)]
    fixtures: std::path::PathBuf,
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed at once (not on first poll), so a
/// signal sent right after the `LISTENING` line never meets the default action.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let listener = TcpListener::bind(cli.listen).await?;
    let addr = listener.local_addr()?;
    let shutdown = shutdown_signal()?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "LISTENING http://{addr}")?;
    stdout.flush()?;
    drop(stdout);

    let options = Options {
        require_key: cli.require_key,
        fixtures: cli.fixtures,
        ..Options::default()
    };
    serve(listener, options, shutdown).await?;
    Ok(())
}
