//! Files a tool sends to a model: which paths may be read, how directories expand, and how
//! contents are embedded (line-numbered, size-capped, within a token budget).
//!
//! Nothing is dropped silently: every path that was refused, skipped or did not fit is listed.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::documents::{Extracted, is_document};
use crate::tokens;

pub mod shown;
mod walk;

/// Largest single file read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Most files a directory expands to.
pub const MAX_EXPANDED_FILES: usize = 2000;

/// Most skipped paths named one by one in a note.
const NOTE_LINES: usize = 30;
/// Below this many tokens left, the file budget counts as used up.
const BUDGET_SLACK: usize = 64;
/// Files read and counted in a row that did not fit, after which only a file of at most half
/// the size of the smallest of them is still read (each read and count of a file that does not
/// fit is wasted, and a directory of large files would cost them all; a small file can still
/// fit, and the halving bounds how many more can miss).
const MAX_MISSES_IN_A_ROW: usize = 8;
/// Fewest tokens a byte of text can cost, as a fraction: no tokenizer packs more than 32 bytes of
/// text in a token on average, so a file of N bytes costs at least N / 32 tokens. One that cannot
/// fit what is left of the budget is named without being read and counted.
const MOST_BYTES_PER_TOKEN: u64 = 32;

/// Why a path was not embedded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: String,
    pub why: String,
}

/// The outcome of embedding a set of paths.
#[derive(Debug, Default)]
pub struct Embedded {
    /// The text to put in the prompt.
    pub text: String,
    pub files: Vec<PathBuf>,
    /// Where each file's block lies in `text` (one per `files`, in the same order), so a
    /// conversation can place each file with the turn that named it.
    pub spans: Vec<std::ops::Range<usize>>,
    pub tokens: usize,
    pub skipped: Vec<Skipped>,
}

impl Embedded {
    /// A note for the answer listing what was left out, if anything was.
    pub fn note(&self) -> Option<String> {
        if self.skipped.is_empty() {
            return None;
        }
        // Refusals and unreadable files first: they matter more than what did not fit.
        let mut skipped: Vec<&Skipped> = self.skipped.iter().collect();
        skipped.sort_by_key(|s| s.why.starts_with("did not fit"));
        let mut lines: Vec<String> = skipped
            .iter()
            .take(NOTE_LINES)
            .map(|s| format!("  {} — {}", shown::name(&s.path), s.why))
            .collect();
        if self.skipped.len() > NOTE_LINES {
            lines.push(format!(
                "  … and {} more (name fewer files or narrower directories)",
                self.skipped.len() - NOTE_LINES
            ));
        }
        Some(format!(
            "Files not sent to the model:\n{}",
            lines.join("\n")
        ))
    }
}

/// Directories whose contents always stay private, wherever they are: key stores and the
/// credential stores of tools a developer has.
const DENIED_DIRS: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".password-store",
    ".codex",
    ".gemini",
    ".augment",
    ".terraform.d",
    ".vault",
    // Oracle Cloud (config and API keys), Fly.io, Netlify's old home, Cloudflare wrangler's
    // login, Hugging Face's old token, Kaggle's API key.
    ".oci",
    ".fly",
    ".netlify",
    ".wrangler",
    ".huggingface",
    ".kaggle",
    ".secrets",
];
/// Directories private when they sit inside the given parent (`~/.config/gh`, `~/.cargo/credentials.toml`…).
const DENIED_NESTED: &[(&str, &str)] = &[
    (".config", "gcloud"),
    (".config", "rclone"),
    (".config", "github-copilot"),
    (".config", "gh"),
    (".config", "glab-cli"),
    (".config", "hub"),
    (".config", "op"),
    (".config", "exai"),
    (".config", "google-chrome"),
    (".config", "chromium"),
    (".config", "doctl"),
    (".config", "netlify"),
    (".config", "stripe"),
    (".config", "sops"),
    (".config", ".wrangler"),
    // npm tools' logins (firebase-tools, snyk…).
    (".config", "configstore"),
    (".local", "share/keyrings"),
    (".subversion", "auth"),
    (".mozilla", ""),
    (".git", ""),
];
/// Files that hold credentials, by exact name (lower case), wherever they are.
const DENIED_NAMES: &[&str] = &[
    ".env",
    ".envrc",
    ".dev.vars",
    ".secrets",
    "secrets.toml",
    "secrets.yaml",
    "secrets.yml",
    "secrets.json",
    "kubeconfig",
    "kubeconfig.yaml",
    "kubeconfig.yml",
    ".gitconfig",
    ".hgrc",
    ".terraformrc",
    ".my.cnf",
    ".databrickscfg",
    "auth.json",
    "deploy_key",
    ".bash_history",
    ".zsh_history",
    ".zhistory",
    ".histfile",
    "fish_history",
    ".python_history",
    ".psql_history",
    ".mysql_history",
    ".netrc",
    "_netrc",
    ".pgpass",
    "credentials.json",
    ".credentials",
    ".credentials.json",
    ".git-credentials",
    ".npmrc",
    ".yarnrc",
    ".yarnrc.yml",
    ".pypirc",
    "pip.conf",
    "nuget.config",
    ".vault-token",
    ".vault_pass",
    ".vault_pass.txt",
    ".vault-pass",
    ".claude.json",
    "claude_desktop_config.json",
    ".mcp.json",
    ".boto",
    ".s3cfg",
    ".passwd-s3fs",
    "passwd-s3fs",
    ".htpasswd",
    "credentials.tfrc.json",
    ".dockercfg",
];
/// Files that hold credentials when they sit in the given directory (its last components).
const DENIED_IN_DIR: &[(&str, &str)] = &[
    (".cursor", "mcp.json"),
    (".vscode", "mcp.json"),
    (".cargo", "credentials"),
    (".cargo", "credentials.toml"),
    (".gem", "credentials"),
    (".m2", "settings.xml"),
    (".m2", "settings-security.xml"),
    (".gradle", "gradle.properties"),
    (".ivy2", ".credentials"),
    (".sbt", ".credentials"),
    (".bundle", "config"),
    (".hg", "hgrc"),
    ("git", "credentials"),
    (".config/git", "config"),
    ("pypoetry", "auth.toml"),
    ("helm", "repositories.yaml"),
    ("helm/registry", "config.json"),
    (".cache/huggingface", "token"),
    (".cache/huggingface", "stored_tokens"),
];
/// Files that hold credentials by the shape of their name (lower case): how it begins and how
/// it ends (`id_rsa.old`, `prod.env`, `.env.local`, `wg0.conf`…).
const DENIED_NAME_SHAPES: &[(&str, &str)] = &[
    // Key and keystore files.
    ("", ".pem"),
    ("", ".key"),
    ("", ".p12"),
    ("", ".pfx"),
    ("", ".jks"),
    ("", ".keystore"),
    ("", ".kdbx"),
    ("", ".ppk"),
    ("", ".p8"),
    ("id_rsa", ""),
    ("id_ed25519", ""),
    ("id_ecdsa", ""),
    ("id_dsa", ""),
    // Environment files and their variants.
    ("", ".env"),
    (".env.", ""),
    (".env-", ""),
    (".env_", ""),
    (".dev.vars.", ""),
    // Terraform state and variables, kubeconfigs, WireGuard configs.
    ("", ".tfstate"),
    ("", ".tfstate.backup"),
    ("", ".tfvars"),
    ("", ".tfvars.json"),
    ("", ".kubeconfig"),
    ("wg", ".conf"),
];
const DENIED_PREFIXES: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/security/opasswd",
    "/etc/ssh",
    "/etc/wireguard",
    // Container and Kubernetes secrets (a service account's token).
    "/run/secrets",
    "/var/run/secrets",
];
/// What marks a private key inside a file, whatever the file is called: PEM and OpenSSH blocks
/// (`-----BEGIN … PRIVATE KEY-----`), PGP secret keys, PuTTY keys, age identities.
const PRIVATE_KEY_MARKERS: &[&str] = &[
    "PRIVATE KEY-----",
    "-----BEGIN PGP PRIVATE KEY BLOCK-----",
    "PuTTY-User-Key-File-",
    "AGE-SECRET-KEY-1",
];

/// Which paths a tool may read: below the allowed roots (when any are set), never exai's own
/// files, never the deny list.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `EXAI_ALLOWED_ROOTS`, canonical; empty means anywhere.
    pub allowed_roots: Vec<PathBuf>,
    /// exai's home (token, records) and config: never sent.
    pub private: Vec<PathBuf>,
    /// The caller is a team member (a personal token), not the machine's owner: the files on
    /// exai's machine are not theirs, so they read only below the allowed roots — none when
    /// none is set.
    pub confined: bool,
    /// The user's home directory, canonical: a path named through a link into its hidden files
    /// and directories is refused (`~/.config/glab-cli/config.yml` as a repository's
    /// `docs/notes.yml`).
    pub home: Option<PathBuf>,
}

impl Policy {
    /// The policy the configuration sets, for the machine's owner.
    pub fn of(config: &Config) -> Self {
        Self {
            allowed_roots: config.allowed_roots.clone(),
            private: config.private_paths.clone(),
            confined: false,
            home: config.user_home.clone(),
        }
    }

    /// The policy for a caller with a personal token (see `confined`).
    pub fn confined(config: &Config) -> Self {
        Self {
            confined: true,
            ..Self::of(config)
        }
    }
}

/// Why the file policy keeps a path from every model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("system path: never sent to a model")]
    System,
    #[error("exai's own files (token, records, config): never sent to a model")]
    Private,
    #[error(
        "credentials directory (SSH, GPG, cloud, container or agent keys): never sent to a model"
    )]
    CredentialsDirectory,
    #[error(
        "credential store or VCS internals (git config can hold tokens): never sent to a model"
    )]
    CredentialStore,
    #[error("looks like a secret (.env, key or credentials file): never sent to a model")]
    SecretName,
    /// Outside `EXAI_ALLOWED_ROOTS` (the roots, as listed in the message).
    #[error("outside the allowed roots (EXAI_ALLOWED_ROOTS: {0})")]
    OutsideRoots(String),
    #[error("holds a private key: never sent to a model")]
    KeyInside,
    /// Named through a link whose target is a hidden file or directory of the home directory.
    #[error(
        "reached through a link into {0}, a hidden file or directory of the home directory \
         (where tools keep settings and tokens): not followed; name the file by its own path to \
         send it"
    )]
    LinkIntoHomeSettings(String),
    /// A personal token's caller, and no allowed roots are set.
    #[error(
        "a file on exai's machine, which a personal token may read only below the allowed roots \
         (EXAI_ALLOWED_ROOTS), and none is set: send its text in the prompt instead"
    )]
    NoRootsForTeam,
}

/// Why a path the caller gave is not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("not an absolute path: give the full path, e.g. /home/me/project/src/main.rs")]
    Relative,
    #[error("cannot be read: {0}")]
    Unreadable(#[from] std::io::Error),
    #[error(transparent)]
    Denied(#[from] Denied),
    /// A FIFO, socket, device, link or directory where a regular file was wanted.
    #[error("{0}")]
    NotADocument(&'static str),
    #[error("{size} bytes is over the {cap}-byte limit per file")]
    TooLarge { size: u64, cap: u64 },
    #[error("grew past the {cap}-byte limit per file while it was read")]
    Grew { cap: u64 },
    /// The file opened is not at the path checked: a directory on the way became a link.
    #[error("moved while it was read (it is now {now}, reached through a link): not read")]
    Moved { now: String },
    #[error("binary file")]
    Binary,
}

/// Why reading `path` is refused, if it is. `path` must already be canonical (symlinks resolved).
pub fn refusal(path: &Path, policy: &Policy) -> Option<Denied> {
    let text = path.to_string_lossy();
    if DENIED_PREFIXES
        .iter()
        .any(|p| text == *p || text.starts_with(&format!("{p}/")))
    {
        return Some(Denied::System);
    }
    if policy.private.iter().any(|p| path.starts_with(p)) {
        return Some(Denied::Private);
    }
    let components: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_lowercase())
        .collect();
    let (name, dirs) = components.split_last()?;
    if dirs.iter().any(|c| DENIED_DIRS.contains(&c.as_str())) {
        return Some(Denied::CredentialsDirectory);
    }
    let below = |parent: &str, child: &str| {
        let parts: Vec<&str> = std::iter::once(parent)
            .chain(child.split('/').filter(|c| !c.is_empty()))
            .collect();
        dirs.windows(parts.len())
            .any(|w| w.iter().zip(&parts).all(|(a, b)| a == b))
    };
    if DENIED_NESTED
        .iter()
        .any(|(parent, child)| below(parent, child))
    {
        return Some(Denied::CredentialStore);
    }
    // `dir` (one or more components) is what the file's directories end with.
    let in_dir = |dir: &str| {
        let parts: Vec<&str> = dir.split('/').collect();
        let tail = dirs.len().checked_sub(parts.len());
        tail.is_some_and(|at| dirs[at..].iter().zip(&parts).all(|(a, b)| a == b))
    };
    let shaped = |(start, end): &(&str, &str)| {
        name.len() >= start.len() + end.len() && name.starts_with(start) && name.ends_with(end)
    };
    let secret_name = DENIED_NAMES.contains(&name.as_str())
        || DENIED_NAME_SHAPES.iter().any(shaped)
        || DENIED_IN_DIR
            .iter()
            .any(|(dir, file)| name == file && in_dir(dir));
    if secret_name {
        return Some(Denied::SecretName);
    }
    let roots = &policy.allowed_roots;
    if policy.confined && roots.is_empty() {
        return Some(Denied::NoRootsForTeam);
    }
    if !roots.is_empty() && !roots.iter().any(|root| path.starts_with(root)) {
        let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return Some(Denied::OutsideRoots(roots.join(", ")));
    }
    None
}

/// The given paths that could not be sent to a model, with why (blocking: it looks at the
/// disk). Lets a tool warn early, before the step that reads them.
pub fn refused(paths: &[String], policy: &Policy) -> Vec<Skipped> {
    paths
        .iter()
        .filter_map(|given| {
            resolve(given, policy).err().map(|why| Skipped {
                path: given.clone(),
                why: why.to_string(),
            })
        })
        .collect()
}

/// Checks and resolves one path the caller gave.
pub fn resolve(given: &str, policy: &Policy) -> Result<PathBuf, FileError> {
    let path = Path::new(given);
    if !path.is_absolute() {
        return Err(FileError::Relative);
    }
    let canonical = path.canonicalize()?;
    if let Some(why) = refusal(&canonical, policy) {
        return Err(why.into());
    }
    if let Some(why) = link_into_home_settings(path, &canonical, policy) {
        return Err(why.into());
    }
    Ok(canonical)
}

/// Why `given` may not be read, if it reaches a hidden file or directory of the home directory
/// (`~/.config/…`, `~/.toolrc`) through a link: a repository's innocent name pointing there is
/// how a clone reads a tool's token that the deny list does not know.
fn link_into_home_settings(given: &Path, canonical: &Path, policy: &Policy) -> Option<Denied> {
    let home = policy.home.as_ref()?;
    let inside = canonical.strip_prefix(home).ok()?;
    let first = inside.components().next()?;
    if !first.as_os_str().as_encoded_bytes().starts_with(b".") {
        return None;
    }
    let mut lexical = PathBuf::new();
    for part in given.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                lexical.pop();
            }
            other => lexical.push(other),
        }
    }
    // Named by its own path: the part inside the home as it is, under the home by any name
    // (`/home/u` may itself be a link).
    let named = lexical.ends_with(inside) && {
        let above = lexical.components().count() - inside.components().count();
        let home_as_named: PathBuf = lexical.components().take(above).collect();
        home_as_named.canonicalize().is_ok_and(|h| &h == home)
    };
    (!named).then(|| Denied::LinkIntoHomeSettings(shown::path(&home.join(first))))
}

/// Why an entry that is neither a regular file nor a directory is never read. FIFOs block the
/// reader until someone writes, devices and sockets are not documents.
fn not_a_document(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a named pipe (FIFO): only regular files are read"
    } else if kind.is_socket() {
        "a socket: only regular files are read"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device: only regular files are read"
    } else if kind.is_symlink() {
        "a symbolic link inside a directory: not followed (name its target to send it)"
    } else if kind.is_dir() {
        "a directory where a file was expected"
    } else {
        "not a regular file: only regular files are read"
    }
}

/// That `meta` is of a regular file of at most `cap` bytes; its size if so.
fn regular_within(meta: &std::fs::Metadata, cap: u64) -> Result<u64, FileError> {
    if !meta.is_file() {
        return Err(FileError::NotADocument(not_a_document(meta.file_type())));
    }
    if meta.len() > cap {
        return Err(FileError::TooLarge {
            size: meta.len(),
            cap,
        });
    }
    Ok(meta.len())
}

/// Checks, without opening it, that `path` is a regular file of at most `cap` bytes (so a FIFO
/// or a device is never opened).
fn look(path: &Path, cap: u64) -> Result<u64, FileError> {
    regular_within(&std::fs::metadata(path)?, cap)
}

/// Reads a path already [`look`]ed at (`path` is canonical: links resolved, as the policy
/// checked it): opened non-blocking without following a link, the open handle checked again (a
/// path swapped since the look cannot make a read block, run past the cap, or be another file
/// than the one checked), the read capped. A file that grows past the cap while it is read is
/// refused.
fn read_looked(path: &Path, cap: u64) -> Result<Vec<u8>, FileError> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)?;
    // O_NOFOLLOW guards only the last part of the path: a directory on the way swapped for a
    // link since the check (`/repo/docs` → `~/.aws`) shows as another real path of the file
    // opened. (Where /proc is not mounted there is nothing to ask, and nothing is refused.)
    if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        && real != path
    {
        return Err(FileError::Moved {
            now: real.display().to_string(),
        });
    }
    let size = regular_within(&file.metadata()?, cap)?;
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(FileError::Grew { cap });
    }
    Ok(bytes)
}

/// Reads a regular file of at most `cap` bytes (blocking, but never unbounded: see
/// [`read_looked`]).
pub fn read_regular(path: &Path, cap: u64) -> Result<Vec<u8>, FileError> {
    look(path, cap)?;
    read_looked(path, cap)
}

/// A file's bytes as text for embedding: `Err(why)` for a binary file, or one that holds a
/// private key whatever its name.
fn text_of(bytes: Vec<u8>) -> Result<String, FileError> {
    if bytes.iter().take(8192).any(|b| *b == 0) {
        return Err(FileError::Binary);
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if holds_a_private_key(&text) {
        return Err(Denied::KeyInside.into());
    }
    Ok(text)
}

/// Whether `text` holds a private key: a PEM or OpenSSH block, a PuTTY key, a Google service
/// account's key file (keys are found by what they are, not only by their file's name).
pub fn holds_a_private_key(text: &str) -> bool {
    PRIVATE_KEY_MARKERS
        .iter()
        .any(|marker| text.contains(marker))
        || (text.contains("\"private_key\"") && text.contains("service_account"))
}

fn numbered(path: &Path, text: &str) -> String {
    labelled(path, "", text)
}

/// A file's text, line-numbered, between markers naming it (and `label`, when given: who
/// extracted a document's text). Neither its name nor its text can write a line of their own:
/// the name is quoted when it holds a line break, other line terminators are shown ([`shown`]).
fn labelled(path: &Path, label: &str, text: &str) -> String {
    let name = shown::path(path);
    let mut out = format!("--- BEGIN FILE: {name}{label} ---\n");
    for (i, line) in text.lines().enumerate() {
        out.push_str(&format!("{:>5}│ {}\n", i + 1, shown::line(line)));
    }
    out.push_str(&format!("--- END FILE: {name} ---\n"));
    out
}

/// Reads a prompt sent as a file (`prompt.txt`), under the same path policy as other files.
pub fn read_prompt_file(given: &str, policy: &Policy) -> Result<String, FileError> {
    let path = resolve(given, policy)?;
    text_of(read_regular(&path, MAX_FILE_BYTES)?)
}

/// Embeds `paths` within `budget` tokens. Blocking (reads the disk): call from `spawn_blocking`.
pub fn embed(paths: &[String], budget: usize, policy: &Policy) -> Embedded {
    embed_with(paths, budget, policy, &Extracted::default())
}

impl Embedded {
    /// Adds `block` (the text of `path`) when it fits what is left of `budget`, else names it;
    /// whether it fitted. A block far past what is left is not counted whole.
    fn fit(&mut self, path: PathBuf, block: String, budget: usize) -> bool {
        let left = budget.saturating_sub(self.tokens);
        let Some(cost) = tokens::count_within(&block, left) else {
            self.skipped.push(Skipped {
                path: path.display().to_string(),
                why: format!(
                    "did not fit: more than the {left} tokens left of the {budget}-token file budget"
                ),
            });
            return false;
        };
        self.tokens += cost;
        let start = self.text.len();
        self.text.push_str(&block);
        self.spans.push(start..self.text.len());
        self.files.push(path);
        true
    }
}

/// Embeds `paths` within `budget` tokens, documents (PDF, Word, …) by the text `documents`
/// holds for them; the named documents it does not hold were accounted for there. Blocking.
pub fn embed_with(
    paths: &[String],
    budget: usize,
    policy: &Policy,
    documents: &Extracted,
) -> Embedded {
    let mut out = Embedded::default();
    let mut candidates = Vec::new();
    // A path named twice (`/repo`, `/repo/.`), or a file reached through two directories, is
    // looked at once: each look may read and count a whole file.
    let mut seen = std::collections::HashSet::new();
    for given in paths {
        match resolve(given, policy) {
            Err(why) => out.skipped.push(Skipped {
                path: given.clone(),
                why: why.to_string(),
            }),
            Ok(path) if !seen.insert(path.clone()) => {}
            Ok(path) if path.is_dir() => walk::expand(&path, &mut candidates, &mut out.skipped),
            Ok(path) => candidates.push(path),
        }
    }
    let mut looked_at = std::collections::HashSet::new();
    candidates.retain(|path| looked_at.insert(path.clone()));
    // Files read and counted that did not fit, since the last that did.
    let mut misses_in_a_row = 0;
    // Once the misses ran on: the size a file must be below to be read still.
    let mut read_below: Option<u64> = None;
    let mut smallest_miss = u64::MAX;
    for path in candidates {
        // Files found inside a directory get the same policy as named ones.
        if let Some(why) = refusal(&path, policy) {
            out.skipped.push(Skipped {
                path: path.display().to_string(),
                why: why.to_string(),
            });
            continue;
        }
        if is_document(&path) {
            match documents.text_of(&path) {
                Some(text) if budget.saturating_sub(out.tokens) >= BUDGET_SLACK => {
                    let label = format!(" (text extracted by {})", documents.by);
                    let block = labelled(&path, &label, text);
                    // Extracted already, so cheap to skip: not counted as a miss.
                    out.fit(path, block, budget);
                }
                Some(_) => out.skipped.push(Skipped {
                    path: path.display().to_string(),
                    why: format!("did not fit: the {budget}-token file budget is used up"),
                }),
                None if documents.handled(&path) => {}
                None => out.skipped.push(Skipped {
                    path: path.display().to_string(),
                    why: "a document (PDF, Word, spreadsheet, slides) reached through a \
                          directory or a link: name it in `files` by its own path to have its \
                          text extracted"
                        .into(),
                }),
            }
            continue;
        }
        let size = match look(&path, MAX_FILE_BYTES) {
            Ok(size) => size,
            Err(why) => {
                out.skipped.push(Skipped {
                    path: path.display().to_string(),
                    why: why.to_string(),
                });
                continue;
            }
        };
        // Once the budget is spent, the rest are named without being read; so is a file too
        // big for what is left of it.
        let left = budget.saturating_sub(out.tokens);
        if left < BUDGET_SLACK {
            out.skipped.push(Skipped {
                path: path.display().to_string(),
                why: format!("did not fit: the {budget}-token file budget is used up"),
            });
            continue;
        }
        if read_below.is_some_and(|below| size >= below) {
            out.skipped.push(Skipped {
                path: path.display().to_string(),
                why: format!(
                    "did not fit: not read, after {MAX_MISSES_IN_A_ROW} files in a row of about \
                     its size or smaller that were read and did not fit the {left} tokens left \
                     of the {budget}-token file budget"
                ),
            });
            continue;
        }
        let fewest = size / MOST_BYTES_PER_TOKEN;
        if fewest > left as u64 {
            out.skipped.push(Skipped {
                path: path.display().to_string(),
                why: format!(
                    "did not fit: {size} bytes, at least {fewest} tokens, {left} left of the \
                     {budget}-token file budget"
                ),
            });
            continue;
        }
        // Looked at above: only the open handle is checked again.
        match read_looked(&path, MAX_FILE_BYTES).and_then(text_of) {
            Err(why) => out.skipped.push(Skipped {
                path: path.display().to_string(),
                why: why.to_string(),
            }),
            Ok(text) => {
                let block = numbered(&path, &text);
                if out.fit(path, block, budget) {
                    misses_in_a_row = 0;
                } else {
                    misses_in_a_row += 1;
                    smallest_miss = smallest_miss.min(size);
                    if misses_in_a_row >= MAX_MISSES_IN_A_ROW {
                        read_below = Some(smallest_miss / 2);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = crate::scratch::scratch_dir("files");
        d.canonicalize().unwrap()
    }

    #[test]
    fn secrets_and_system_paths_are_refused() {
        let none = &Policy::default();
        assert!(refusal(Path::new("/home/u/.ssh/id_rsa"), none).is_some());
        for secret in [
            "/home/u/project/.envrc",
            "/home/u/project/prod.env",
            "/home/u/.kube2/kubeconfig",
            "/home/u/.gitconfig",
            "/home/u/infra/terraform.tfstate",
            "/home/u/infra/prod.tfvars",
            "/home/u/keys/server.ppk",
            "/home/u/keys/AuthKey_ABC123.p8",
            "/home/u/.config/rclone/rclone.conf",
            "/home/u/.config/containers/auth.json",
            "/home/u/project/.vscode/mcp.json",
            "/home/u/.bash_history",
            "/run/secrets/kubernetes.io/serviceaccount/token",
            "/etc/ssh/ssh_host_ed25519_key",
            "/etc/shadow-",
            "/etc/gshadow",
            "/etc/wireguard/wg0.conf",
            "/home/u/.config/git/config",
            "/home/u/.config/glab-cli/config.yml",
            "/home/u/.config/doctl/config.yaml",
            "/home/u/.config/netlify/config.json",
            "/home/u/.config/configstore/firebase-tools.json",
            "/home/u/.fly/config.yml",
            "/home/u/.config/stripe/config.toml",
            "/home/u/.databrickscfg",
            "/home/u/.oci/config",
            "/home/u/.huggingface/token",
            "/home/u/.cache/huggingface/token",
            "/home/u/.kaggle/kaggle.json",
            "/home/u/.config/sops/age/keys.txt",
            "/home/u/.gradle/gradle.properties",
            "/home/u/.ivy2/.credentials",
            "/home/u/.config/pypoetry/auth.toml",
            "/home/u/.config/pip/pip.conf",
            "/home/u/.yarnrc",
            "/home/u/project/.bundle/config",
            "/home/u/.nuget/NuGet/NuGet.Config",
            "/home/u/.config/helm/repositories.yaml",
            "/home/u/.passwd-s3fs",
            "/home/u/.config/.wrangler/config/default.toml",
            "/home/u/.config/Claude/claude_desktop_config.json",
            "/home/u/.hgrc",
            "/home/u/.subversion/auth/svn.simple/0a1b",
            "/home/u/.local/share/fish/fish_history",
            "/home/u/.histfile",
            "/home/u/.zhistory",
            "/home/u/project/config/secrets.yml",
            "/home/u/project/.secrets",
            "/home/u/project/.env-production",
            "/home/u/project/.env_local",
            "/home/u/project/.dev.vars",
            "/home/u/project/.vault_pass",
            "/home/u/infra/prod.tfvars.json",
            "/home/u/infra/prod.kubeconfig",
            "/home/u/infra/kubeconfig.yaml",
            "/home/u/vpn/wg0.conf",
        ] {
            assert!(refusal(Path::new(secret), none).is_some(), "{secret}");
        }
        // Their innocent neighbours are not.
        for plain in [
            "/home/u/project/gradle.properties",
            "/home/u/project/config/settings.yml",
            "/home/u/project/git/config.rs",
            "/home/u/project/src/environment.rs",
            "/home/u/.config/nvim/init.lua",
        ] {
            assert!(refusal(Path::new(plain), none).is_none(), "{plain}");
        }
        assert!(refusal(Path::new("/home/u/project/.env"), none).is_some());
        assert!(refusal(Path::new("/home/u/project/.env.local"), none).is_some());
        assert!(refusal(Path::new("/home/u/.config/gcloud/creds.db"), none).is_some());
        assert!(refusal(Path::new("/proc/self/environ"), none).is_some());
        assert!(refusal(Path::new("/home/u/tls/server.key"), none).is_some());
        assert!(refusal(Path::new("/home/u/project/src/main.rs"), none).is_none());
        let roots = &Policy {
            allowed_roots: vec![PathBuf::from("/home/u/project")],
            private: vec![PathBuf::from("/home/u/.local/state/exai")],
            confined: false,
            home: None,
        };
        assert_eq!(
            refusal(Path::new("/home/u/other/x.rs"), roots)
                .unwrap()
                .to_string(),
            "outside the allowed roots (EXAI_ALLOWED_ROOTS: /home/u/project)"
        );
        assert!(refusal(Path::new("/home/u/project/x.rs"), roots).is_none());
        assert_eq!(
            refusal(Path::new("/home/u/.local/state/exai/token"), roots),
            Some(Denied::Private)
        );
        // A personal token's call: below the roots only, and nowhere without any.
        let team = &Policy {
            confined: true,
            ..roots.clone()
        };
        assert!(refusal(Path::new("/home/u/project/x.rs"), team).is_none());
        assert!(refusal(Path::new("/home/u/other/x.rs"), team).is_some());
        let no_roots = &Policy {
            confined: true,
            ..Policy::default()
        };
        assert_eq!(
            refusal(Path::new("/home/u/project/x.rs"), no_roots),
            Some(Denied::NoRootsForTeam)
        );
    }

    #[test]
    fn directories_expand_with_gitignore_and_nothing_is_dropped_silently() {
        let d = dir();
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::create_dir_all(d.join("target")).unwrap();
        std::fs::write(d.join("src/lib.rs"), "fn a() {}\nfn b() {}\n").unwrap();
        std::fs::write(d.join("target/out.rs"), "build output").unwrap();
        std::fs::write(d.join("ignored.log"), "noise").unwrap();
        std::fs::write(d.join(".gitignore"), "*.log\n").unwrap();
        std::fs::create_dir_all(d.join(".git")).unwrap();
        std::fs::write(d.join("blob.bin"), [0u8, 1, 2, 3]).unwrap();
        std::fs::write(d.join(".env"), "KEY=1").unwrap();
        let e = embed(
            &[d.display().to_string(), "relative/path.rs".into()],
            10_000,
            &Policy::default(),
        );
        let names: Vec<String> = e
            .files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["lib.rs"], "{:?}", e.skipped);
        assert!(e.text.contains("    1│ fn a() {}"));
        assert!(
            e.skipped
                .iter()
                .any(|s| s.path.ends_with("blob.bin") && s.why == "binary file")
        );
        assert!(
            e.skipped
                .iter()
                .any(|s| s.path == "relative/path.rs" && s.why.contains("absolute"))
        );
        assert!(e.note().unwrap().contains("blob.bin"));
    }

    #[test]
    fn a_link_into_the_homes_hidden_files_is_not_followed() {
        let home = dir();
        let project = dir();
        std::fs::create_dir_all(home.join(".config/sometool")).unwrap();
        std::fs::write(home.join(".config/sometool/state.json"), "{}").unwrap();
        std::fs::write(home.join(".toolrc"), "token").unwrap();
        std::fs::write(home.join("notes.txt"), "plain").unwrap();
        let link = |name: &str, to: &Path| std::os::unix::fs::symlink(to, project.join(name));
        link("state.json", &home.join(".config/sometool/state.json")).unwrap();
        link("readme.txt", &home.join(".toolrc")).unwrap();
        link("config", &home.join(".config")).unwrap();
        link("notes.txt", &home.join("notes.txt")).unwrap();
        let policy = Policy {
            home: Some(home.clone()),
            ..Policy::default()
        };
        let given = |p: PathBuf| p.display().to_string();
        for through_a_link in [
            project.join("state.json"),
            project.join("readme.txt"),
            project.join("config/sometool/state.json"),
            project.join("config/../.toolrc"),
        ] {
            let refused = resolve(&given(through_a_link.clone()), &policy);
            assert!(
                matches!(
                    refused,
                    Err(FileError::Denied(Denied::LinkIntoHomeSettings(_)))
                ),
                "{}: {refused:?}",
                through_a_link.display()
            );
        }
        // Named by their own path (the user's intent), or a link to the home's plain files: read.
        for fine in [
            home.join(".toolrc"),
            home.join(".config/./sometool/state.json"),
            project.join("notes.txt"),
        ] {
            assert!(
                resolve(&given(fine.clone()), &policy).is_ok(),
                "{}",
                fine.display()
            );
        }
    }

    #[test]
    fn a_private_key_is_found_by_what_it_is_whatever_the_file_is_called() {
        let d = dir();
        let keys = [
            (
                "notes.txt",
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n",
            ),
            (
                "backup.asc",
                "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF\n",
            ),
            (
                "identity.txt",
                "# created: 2024\nAGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ\n",
            ),
            ("deploy.cfg", "x\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\n"),
            ("server.txt", "PuTTY-User-Key-File-3: ssh-ed25519\n"),
            (
                "gcp.json",
                "{\"type\": \"service_account\", \"private_key\": \"x\"}",
            ),
        ];
        for (name, text) in keys {
            std::fs::write(d.join(name), text).unwrap();
        }
        std::fs::write(d.join("plain.txt"), "a public key: ssh-ed25519 AAAA\n").unwrap();
        let e = embed(&[d.display().to_string()], 10_000, &Policy::default());
        let names: Vec<String> = (e.files.iter())
            .map(|f| f.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["plain.txt"], "{:?}", e.skipped);
        for (name, _) in keys {
            assert!(
                (e.skipped.iter())
                    .any(|s| s.path.ends_with(name) && s.why.contains("holds a private key")),
                "{name}: {:?}",
                e.skipped
            );
        }
    }

    /// A directory named three ways, holding a file far over the budget: the file is looked at
    /// once, and named as not fitting from its size alone.
    #[test]
    fn a_path_named_many_times_is_looked_at_once_and_a_huge_file_is_not_counted() {
        let d = dir();
        std::fs::write(d.join("huge.txt"), "word ".repeat(200_000)).unwrap();
        std::fs::write(d.join("small.rs"), "fn a() {}\n").unwrap();
        let named = [
            d.display().to_string(),
            format!("{}/", d.display()),
            format!("{}/.", d.display()),
            d.join("small.rs").display().to_string(),
        ];
        let e = embed(&named, 1_000, &Policy::default());
        assert_eq!(e.files, [d.join("small.rs")]);
        assert_eq!(e.skipped.len(), 1, "{:?}", e.skipped);
        assert!(
            e.skipped[0]
                .why
                .contains("1000000 bytes, at least 31250 tokens"),
            "{:?}",
            e.skipped
        );
    }

    /// A path checked, then reached through a directory swapped for a link before it is read,
    /// is another file: refused, not read.
    #[test]
    fn a_file_reached_through_a_directory_swapped_for_a_link_is_not_read() {
        let d = dir();
        std::fs::create_dir_all(d.join("aws")).unwrap();
        std::fs::write(d.join("aws/credentials"), "secret").unwrap();
        std::os::unix::fs::symlink(d.join("aws"), d.join("docs")).unwrap();
        // What read_looked is handed after the check: the path as it was checked.
        let checked = d.join("docs/credentials");
        let read = read_looked(&checked, MAX_FILE_BYTES);
        assert!(matches!(read, Err(FileError::Moved { .. })), "{read:?}");
        assert_eq!(
            read_looked(&d.join("aws/credentials"), MAX_FILE_BYTES).ok(),
            Some(b"secret".to_vec())
        );
    }

    #[test]
    fn the_budget_is_kept_and_what_did_not_fit_is_named() {
        let d = dir();
        std::fs::write(d.join("a.txt"), "word ".repeat(50)).unwrap();
        std::fs::write(d.join("b.txt"), "word ".repeat(5000)).unwrap();
        let e = embed(
            &[
                d.join("a.txt").display().to_string(),
                d.join("b.txt").display().to_string(),
            ],
            500,
            &Policy::default(),
        );
        assert_eq!(e.files.len(), 1);
        assert!(e.tokens <= 500);
        assert!(
            e.skipped[0].why.starts_with("did not fit"),
            "{:?}",
            e.skipped
        );
    }
}
