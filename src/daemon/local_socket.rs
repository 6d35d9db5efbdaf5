//! The daemon's Unix socket `EXAI_HOME/daemon.sock`: the shim's way in, private to the user by its directory.
//!
//! Only the owner of a 0700 directory can create, replace or reach entries in it, so a socket found
//! there, owned by the user, is the user's daemon: the shim can hand it the token.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};

/// Longest socket path the kernel takes (`sun_path` holds 108 bytes with its NUL on Linux, 104 elsewhere).
const MAX_SOCKET_PATH: usize = 103;

/// `path` as a socket address can hold it: itself when short enough; past the bound, on Linux,
/// the same file reached through a descriptor of its directory (`/proc/self/fd/N/daemon.sock`),
/// open while this lives. A deep EXAI_HOME would otherwise leave exai without its socket.
struct SocketAddress {
    path: PathBuf,
    _directory: Option<std::fs::File>,
}

impl SocketAddress {
    fn of(path: &Path) -> std::io::Result<Self> {
        #[cfg(target_os = "linux")]
        if path.as_os_str().len() > MAX_SOCKET_PATH
            && let (Some(directory), Some(name)) = (path.parent(), path.file_name())
        {
            use std::os::fd::AsRawFd;
            // Opening a directory is a lookup, as the metadata calls around it are.
            let directory = std::fs::File::open(directory)?;
            return Ok(Self {
                path: Path::new("/proc/self/fd")
                    .join(directory.as_raw_fd().to_string())
                    .join(name),
                _directory: Some(directory),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            _directory: None,
        })
    }
}

/// A connection to the socket at `path`, however long the path.
pub async fn connect(path: &Path) -> std::io::Result<UnixStream> {
    let address = SocketAddress::of(path)?;
    UnixStream::connect(&address.path).await
}

/// Why the socket or its directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "{path} belongs to uid {owner}, not to you (uid {uid}); exai will not use another user's state directory"
    )]
    NotYours { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "{path} is open to other users (mode {mode:03o}), so its daemon socket cannot be trusted; run `chmod 700 {path}`"
    )]
    NotPrivate { path: PathBuf, mode: u32 },
    #[error("{path} is not a socket of yours ({what}); remove it")]
    NotOurSocket { path: PathBuf, what: String },
    #[error(
        "an exai daemon already answers on {path} without holding EXAI_HOME's lock; stop it first"
    )]
    InUse { path: PathBuf },
    #[error("cannot listen on {path}: {source}{hint}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SocketError + '_ {
    move |source| SocketError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The effective user id of this process.
pub fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}

/// Refuses a state directory of another user and takes group/other access away from ours.
pub fn secure_home(home: &Path) -> Result<(), SocketError> {
    let meta = std::fs::metadata(home).map_err(io_error(home))?;
    let uid = current_uid();
    if meta.uid() != uid {
        return Err(SocketError::NotYours {
            path: home.to_path_buf(),
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error(home))?;
        tracing::info!(home = %home.display(), was = format!("{mode:03o}"), "state directory made private (0700)");
    }
    Ok(())
}

/// What the shim finds before it connects.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A socket of the user's in a private directory of the user's.
    Socket,
    /// No socket (or no directory): no daemon runs for this home.
    Nothing,
}

/// The shim's look before it connects: the directory must be the user's and private, the socket the user's.
pub fn inspect(home: &Path, socket: &Path) -> Result<Found, SocketError> {
    let dir = match std::fs::metadata(home) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(source) => return Err(io_error(home)(source)),
    };
    let uid = current_uid();
    if dir.uid() != uid {
        return Err(SocketError::NotYours {
            path: home.to_path_buf(),
            owner: dir.uid(),
            uid,
        });
    }
    let entry = match std::fs::symlink_metadata(socket) {
        Ok(meta) => meta,
        // A daemon started now makes the directory private before it listens.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(source) => return Err(io_error(socket)(source)),
    };
    let mode = dir.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SocketError::NotPrivate {
            path: home.to_path_buf(),
            mode,
        });
    }
    if !entry.file_type().is_socket() || entry.uid() != uid {
        return Err(SocketError::NotOurSocket {
            path: socket.to_path_buf(),
            what: describe(&entry, uid),
        });
    }
    Ok(Found::Socket)
}

fn describe(entry: &std::fs::Metadata, uid: u32) -> String {
    let kind = entry.file_type();
    if !kind.is_socket() {
        let what = if kind.is_symlink() {
            "a symbolic link"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "a file"
        };
        return what.to_string();
    }
    format!("a socket of uid {}, you are uid {uid}", entry.uid())
}

/// The bound socket's file, removed when the daemon stops.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.0)
            && error.kind() != ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), %error, "cannot remove the daemon socket");
        }
    }
}

/// Listens on `path` (mode 0600), after removing a stale socket left by a daemon that died.
///
/// The caller holds EXAI_HOME's lock, so no daemon of this home runs; a socket that still answers
/// belongs to something else and is left alone.
pub async fn bind(path: &Path) -> Result<(UnixListener, SocketFile), SocketError> {
    remove_stale(path).await?;
    let listener = SocketAddress::of(path)
        .and_then(|address| UnixListener::bind(&address.path))
        .map_err(|source| SocketError::Bind {
            path: path.to_path_buf(),
            // Linux reaches a long path through its directory's descriptor (`SocketAddress`).
            hint: if cfg!(not(target_os = "linux")) && path.as_os_str().len() > MAX_SOCKET_PATH {
                " (socket paths are limited to about 100 bytes: choose a shorter EXAI_HOME)"
            } else {
                ""
            },
            source,
        })?;
    let file = SocketFile(path.to_path_buf());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_error(path))?;
    Ok((listener, file))
}

async fn remove_stale(path: &Path) -> Result<(), SocketError> {
    let entry = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io_error(path)(source)),
    };
    if !entry.file_type().is_socket() {
        return Err(SocketError::NotOurSocket {
            path: path.to_path_buf(),
            what: describe(&entry, current_uid()),
        });
    }
    // Another user's socket in our private directory is never a daemon of ours: remove it unasked.
    if entry.uid() == current_uid() {
        let probe = tokio::time::timeout(Duration::from_secs(1), connect(path)).await;
        // Connected, or still waiting in a full backlog: something listens there.
        if !matches!(probe, Ok(Err(_))) {
            return Err(SocketError::InUse {
                path: path.to_path_buf(),
            });
        }
    }
    tracing::info!(path = %path.display(), "removing a stale daemon socket");
    std::fs::remove_file(path).map_err(io_error(path))
}
