//! Files a tool sends to a model: which paths may be read, how directories expand, and how
//! contents are embedded (line-numbered, size-capped, within a token budget).
//!
//! Nothing is dropped silently: every path that was refused, skipped or did not fit is listed.

use std::path::{Path, PathBuf};

use crate::tokens;

/// Largest single file read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Most files a directory expands to.
pub const MAX_EXPANDED_FILES: usize = 2000;

/// Most skipped paths named one by one in a note.
const NOTE_LINES: usize = 30;
/// Below this many tokens left, the file budget counts as used up.
const BUDGET_SLACK: usize = 64;

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
            .map(|s| format!("  {} — {}", s.path, s.why))
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

/// Path components that always stay private.
const DENIED_DIRS: [&str; 7] = [
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".password-store",
];
const DENIED_PREFIXES: [&str; 4] = ["/proc", "/sys", "/dev", "/etc/shadow"];
const DENIED_CONFIG_DIRS: [&str; 2] = ["gcloud", "gh"];
/// Directories that are build output or VCS internals, skipped when a directory expands.
const SKIPPED_DIRS: [&str; 10] = [
    ".git",
    "target",
    "node_modules",
    "__pycache__",
    ".venv",
    "venv",
    "dist",
    "build",
    ".hg",
    ".tox",
];

/// Why reading `path` is refused, if it is. `path` must already be canonical (symlinks resolved).
pub fn refusal(path: &Path, allowed_roots: &[PathBuf]) -> Option<String> {
    let text = path.to_string_lossy();
    if DENIED_PREFIXES
        .iter()
        .any(|p| text == *p || text.starts_with(&format!("{p}/")))
    {
        return Some("system path: never sent to a model".into());
    }
    let components: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    if components.iter().any(|c| DENIED_DIRS.contains(&c.as_str())) {
        return Some(
            "credentials directory (SSH, GPG, cloud or container keys): never sent to a model"
                .into(),
        );
    }
    if components
        .windows(2)
        .any(|w| w[0] == ".config" && DENIED_CONFIG_DIRS.contains(&w[1].as_str()))
    {
        return Some("cloud CLI credentials: never sent to a model".into());
    }
    if let Some(name) = path.file_name().map(|n| n.to_string_lossy().to_lowercase()) {
        let secret_name = name == ".env"
            || name.starts_with(".env.")
            || name.ends_with(".pem")
            || name.ends_with(".key")
            || name.ends_with(".p12")
            || name.ends_with(".pfx")
            || name.starts_with("id_rsa")
            || name.starts_with("id_ed25519")
            || name.starts_with("id_ecdsa")
            || name == ".netrc"
            || name == ".pgpass"
            || name == "credentials.json";
        if secret_name {
            return Some(
                "looks like a secret (.env, key or credentials file): never sent to a model".into(),
            );
        }
    }
    if !allowed_roots.is_empty() && !allowed_roots.iter().any(|root| path.starts_with(root)) {
        let roots: Vec<String> = allowed_roots
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        return Some(format!(
            "outside the allowed roots (EXAI_ALLOWED_ROOTS: {})",
            roots.join(", ")
        ));
    }
    None
}

/// The given paths that could not be sent to a model, with why (blocking: it looks at the
/// disk). Lets a tool warn early, before the step that reads them.
pub fn refused(paths: &[String], allowed_roots: &[PathBuf]) -> Vec<Skipped> {
    paths
        .iter()
        .filter_map(|given| {
            resolve(given, allowed_roots).err().map(|why| Skipped {
                path: given.clone(),
                why,
            })
        })
        .collect()
}

/// Checks and resolves one path the caller gave.
pub fn resolve(given: &str, allowed_roots: &[PathBuf]) -> Result<PathBuf, String> {
    let path = Path::new(given);
    if !path.is_absolute() {
        return Err(
            "not an absolute path: give the full path, e.g. /home/me/project/src/main.rs".into(),
        );
    }
    let canonical = path
        .canonicalize()
        .map_err(|e| format!("cannot be read: {e}"))?;
    if let Some(why) = refusal(&canonical, allowed_roots) {
        return Err(why);
    }
    Ok(canonical)
}

/// Expands directories (honouring .gitignore, skipping build and VCS folders), bounded.
fn expand(dir: &Path, out: &mut Vec<PathBuf>, skipped: &mut Vec<Skipped>) {
    let walker = ignore::WalkBuilder::new(dir)
        .hidden(true)
        .git_ignore(true)
        .filter_entry(|e| {
            e.file_type().is_none_or(|t| !t.is_dir())
                || !SKIPPED_DIRS.contains(&e.file_name().to_string_lossy().as_ref())
        })
        .build();
    let mut count = 0usize;
    for entry in walker.flatten() {
        if entry.file_type().is_some_and(|t| t.is_file()) {
            if count >= MAX_EXPANDED_FILES {
                skipped.push(Skipped {
                    path: dir.display().to_string(),
                    why: format!("more than {MAX_EXPANDED_FILES} files: only the first {MAX_EXPANDED_FILES} were considered"),
                });
                return;
            }
            count += 1;
            out.push(entry.into_path());
        }
    }
}

/// Refuses a file over the per-file cap without reading it.
fn check_size(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be read: {e}"))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{} bytes is over the {MAX_FILE_BYTES}-byte limit per file",
            meta.len()
        ));
    }
    Ok(())
}

/// Reads a file for embedding: `Err(why)` for binary, too large or unreadable files.
fn read_text(path: &Path) -> Result<String, String> {
    check_size(path)?;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.iter().take(8192).any(|b| *b == 0) {
        return Err("binary file".into());
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn numbered(path: &Path, text: &str) -> String {
    let mut out = format!("--- BEGIN FILE: {} ---\n", path.display());
    for (i, line) in text.lines().enumerate() {
        out.push_str(&format!("{:>5}│ {line}\n", i + 1));
    }
    out.push_str(&format!("--- END FILE: {} ---\n", path.display()));
    out
}

/// Reads a prompt sent as a file (`prompt.txt`), under the same path policy as other files.
pub fn read_prompt_file(given: &str, allowed_roots: &[PathBuf]) -> Result<String, String> {
    let path = resolve(given, allowed_roots)?;
    read_text(&path)
}

/// Embeds `paths` within `budget` tokens. Blocking (reads the disk): call from `spawn_blocking`.
pub fn embed(paths: &[String], budget: usize, allowed_roots: &[PathBuf]) -> Embedded {
    let mut out = Embedded::default();
    let mut candidates = Vec::new();
    for given in paths {
        match resolve(given, allowed_roots) {
            Err(why) => out.skipped.push(Skipped {
                path: given.clone(),
                why,
            }),
            Ok(path) if path.is_dir() => expand(&path, &mut candidates, &mut out.skipped),
            Ok(path) => candidates.push(path),
        }
    }
    candidates.dedup();
    for path in candidates {
        if out.files.contains(&path) {
            continue;
        }
        // Files found inside a directory get the same policy as named ones.
        if let Some(why) = refusal(&path, allowed_roots) {
            out.skipped.push(Skipped {
                path: path.display().to_string(),
                why,
            });
            continue;
        }
        if let Err(why) = check_size(&path) {
            out.skipped.push(Skipped {
                path: path.display().to_string(),
                why,
            });
            continue;
        }
        // Once the budget is spent, the rest are named without being read.
        if budget.saturating_sub(out.tokens) < BUDGET_SLACK {
            out.skipped.push(Skipped {
                path: path.display().to_string(),
                why: format!("did not fit: the {budget}-token file budget is used up"),
            });
            continue;
        }
        match read_text(&path) {
            Err(why) => out.skipped.push(Skipped {
                path: path.display().to_string(),
                why,
            }),
            Ok(text) => {
                let block = numbered(&path, &text);
                let cost = tokens::count(&block);
                if out.tokens + cost > budget {
                    out.skipped.push(Skipped {
                        path: path.display().to_string(),
                        why: format!(
                            "did not fit: {cost} tokens, {} left of the {budget}-token file budget",
                            budget.saturating_sub(out.tokens)
                        ),
                    });
                    continue;
                }
                out.tokens += cost;
                out.text.push_str(&block);
                out.files.push(path);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("exai-files-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&d).unwrap();
        d.canonicalize().unwrap()
    }

    #[test]
    fn secrets_and_system_paths_are_refused() {
        let none: &[PathBuf] = &[];
        assert!(refusal(Path::new("/home/u/.ssh/id_rsa"), none).is_some());
        assert!(refusal(Path::new("/home/u/project/.env"), none).is_some());
        assert!(refusal(Path::new("/home/u/project/.env.local"), none).is_some());
        assert!(refusal(Path::new("/home/u/.config/gcloud/creds.db"), none).is_some());
        assert!(refusal(Path::new("/proc/self/environ"), none).is_some());
        assert!(refusal(Path::new("/home/u/tls/server.key"), none).is_some());
        assert!(refusal(Path::new("/home/u/project/src/main.rs"), none).is_none());
        let roots = [PathBuf::from("/home/u/project")];
        assert!(
            refusal(Path::new("/home/u/other/x.rs"), &roots)
                .unwrap()
                .contains("allowed roots")
        );
        assert!(refusal(Path::new("/home/u/project/x.rs"), &roots).is_none());
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
            &[],
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
            &[],
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
