//! This process's stdin and stdout as async streams.
//!
//! When they are pipes (as MCP clients launch us) they are read and written
//! non-blocking on the event loop; tokio's own stdin/stdout go through a blocking
//! thread per operation, a cross-thread hop on every message. Anything else (a
//! terminal, a file) falls back to tokio's.

use std::os::fd::AsFd;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;

/// Standard input, non-blocking if it is a pipe.
pub fn input() -> Box<dyn AsyncRead + Send + Unpin> {
    let pipe = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .and_then(pipe::Receiver::from_owned_fd);
    match pipe {
        Ok(pipe) => Box::new(pipe),
        Err(_) => Box::new(tokio::io::stdin()),
    }
}

/// Standard output, non-blocking if it is a pipe.
pub fn output() -> Box<dyn AsyncWrite + Send + Unpin> {
    let pipe = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .and_then(pipe::Sender::from_owned_fd);
    match pipe {
        Ok(pipe) => Box::new(pipe),
        Err(_) => Box::new(tokio::io::stdout()),
    }
}
