//! A directory's expansion: its files in path order, with gitignore rules applied the way
//! ripgrep's `ignore` crate applies them (`.ignore` everywhere; `.gitignore`,
//! `.git/info/exclude` and the user's global excludes inside a git repository; the deeper file
//! first, `!` re-including, hidden entries skipped unless re-included, the directories above the
//! one named included), but with
//! every ignore file read by exai itself: only a regular file, never through a link, at most
//! [`MAX_IGNORE_FILE_BYTES`], and at most [`MAX_IGNORE_PATTERNS`] patterns in one expansion. The
//! crate opened them following links with no bound, so `.gitignore -> /dev/zero` ran the daemon
//! out of memory and `-> /dev/urandom` read for ever on a thread nothing could stop. The walk
//! itself looks at [`MAX_VISITED_ENTRIES`] entries at most, whatever they are.

use std::ffi::OsString;
use std::fs::FileType;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::{MAX_EXPANDED_FILES, Skipped, not_a_document, read_regular};

/// Largest ignore file read; a larger one is named and its patterns not applied.
pub const MAX_IGNORE_FILE_BYTES: u64 = 64 * 1024;
/// Most ignore patterns one expansion takes, over all its ignore files.
pub const MAX_IGNORE_PATTERNS: usize = 10_000;
/// Most entries one expansion looks at (files, directories, hidden and ignored ones alike).
pub const MAX_VISITED_ENTRIES: usize = 20_000;
/// Longest ignore pattern taken; git has no such line in an honest repository.
const MAX_PATTERN_BYTES: usize = 1024;

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

/// The ignore rules of one directory.
struct Rules {
    ignore: Option<Gitignore>,
    git_ignore: Option<Gitignore>,
    git_exclude: Option<Gitignore>,
    /// The user's own excludes (`~/.config/git/ignore`), rooted at this repository.
    global: Option<Gitignore>,
    /// It holds `.git`: git's rules above it do not reach below it.
    repository: bool,
    /// It or a directory above is a repository: `.gitignore` counts here.
    in_repository: bool,
    outer: Option<Arc<Rules>>,
}

/// The rules in force in a directory: its own and those of every directory above, innermost
/// first (a linked list, so a deep tree costs one node a directory that has rules).
#[derive(Clone, Default)]
struct Chain(Option<Arc<Rules>>);

impl Chain {
    fn in_repository(&self) -> bool {
        self.0.as_ref().is_some_and(|r| r.in_repository)
    }

    fn nodes(&self) -> impl Iterator<Item = &Rules> {
        std::iter::successors(self.0.as_deref(), |r| r.outer.as_deref())
    }

    /// Whether `path` is ignored, re-included (`!`) or neither: the deepest file that says
    /// anything decides; `.ignore` before `.gitignore` before `info/exclude`; git's rules stop at
    /// the innermost repository.
    fn matched(&self, path: &Path, is_dir: bool) -> Match<()> {
        let in_git = self.in_repository();
        let (mut ignore, mut git, mut exclude, mut global) =
            (Match::None, Match::None, Match::None, Match::None);
        let mut past_repository = false;
        let check = |found: &mut Match<()>, rules: &Option<Gitignore>| {
            if let (true, Some(rules)) = (found.is_none(), rules) {
                *found = rules.matched(path, is_dir).map(|_| ());
            }
        };
        for rules in self.nodes() {
            check(&mut ignore, &rules.ignore);
            if in_git && !past_repository {
                check(&mut git, &rules.git_ignore);
                check(&mut exclude, &rules.git_exclude);
                check(&mut global, &rules.global);
            }
            past_repository |= rules.repository;
        }
        ignore.or(git).or(exclude).or(global)
    }
}

/// Reads the ignore files of directories as the walk meets them, within the bounds.
struct Reader<'a> {
    patterns: usize,
    skipped: &'a mut Vec<Skipped>,
    /// The user's global excludes file, where there is one.
    global: Option<PathBuf>,
    /// Its bytes, once the first repository met needed them (`None` until then): read once
    /// for every repository the expansion meets, and not at all where it meets none.
    global_bytes: Option<Option<Arc<[u8]>>>,
}

/// The user's global git excludes file at git's default place (`$XDG_CONFIG_HOME/git/ignore`,
/// else `~/.config/git/ignore`): the user's own rules, applied in every repository as git applies
/// them. One named elsewhere by `core.excludesFile` is not looked for.
fn global_excludes() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            let home = PathBuf::from(std::env::var_os("HOME")?);
            home.is_absolute().then(|| home.join(".config"))
        })?;
    // The user's own file may be a link (a dotfiles manager's): it is resolved here, once, and
    // then read as any ignore file is.
    config.join("git/ignore").canonicalize().ok()
}

impl Reader<'_> {
    /// `chain` with `dir`'s own rules added (the same chain if it has none).
    fn enter(&mut self, chain: &Chain, dir: &Path) -> Chain {
        let git = std::fs::symlink_metadata(dir.join(".git")).ok();
        let repository = git.is_some();
        let in_repository = repository || chain.in_repository();
        let ignore = self.rules(dir, &dir.join(".ignore"));
        let git_ignore = in_repository
            .then(|| self.rules(dir, &dir.join(".gitignore")))
            .flatten();
        // Only a `.git` directory's own exclude file (a `.git` file's is elsewhere).
        let git_exclude = git
            .is_some_and(|m| m.is_dir())
            .then(|| self.rules(dir, &dir.join(".git/info/exclude")))
            .flatten();
        let global = repository.then(|| self.global_rules(dir)).flatten();
        if !repository && ignore.is_none() && git_ignore.is_none() && git_exclude.is_none() {
            return chain.clone();
        }
        Chain(Some(Arc::new(Rules {
            ignore,
            git_ignore,
            git_exclude,
            global,
            repository,
            in_repository,
            outer: chain.0.clone(),
        })))
    }

    /// The patterns of the ignore file `file` (rooted at `dir`), if it is there and may be read;
    /// one that may not is named in `skipped`.
    fn rules(&mut self, dir: &Path, file: &Path) -> Option<Gitignore> {
        let bytes = self.read_noting(file)?;
        self.rules_of(dir, file, &bytes)
    }

    /// The user's global excludes as rules rooted at `dir`, a repository's top.
    fn global_rules(&mut self, dir: &Path) -> Option<Gitignore> {
        let file = self.global.clone()?;
        let bytes = match &self.global_bytes {
            Some(read) => read.clone(),
            None => {
                let read: Option<Arc<[u8]>> = self.read_noting(&file).map(Into::into);
                self.global_bytes = Some(read.clone());
                read
            }
        }?;
        self.rules_of(dir, &file, &bytes)
    }

    /// [`Reader::read`], an ignore file that may not be read named in `skipped`.
    fn read_noting(&mut self, file: &Path) -> Option<Vec<u8>> {
        self.read(file).unwrap_or_else(|why| {
            self.skipped.push(Skipped {
                path: file.display().to_string(),
                why: format!("ignore file not read ({why}): its patterns were not applied"),
            });
            None
        })
    }

    /// The patterns in `bytes`, read from `file`, rooted at `dir`.
    fn rules_of(&mut self, dir: &Path, file: &Path, bytes: &[u8]) -> Option<Gitignore> {
        let mut builder = GitignoreBuilder::new(dir);
        let text = String::from_utf8_lossy(bytes);
        // A byte order mark (an editor's) is no part of the first pattern, as git reads it.
        for line in text.strip_prefix('\u{feff}').unwrap_or(&text).lines() {
            if self.patterns >= MAX_IGNORE_PATTERNS {
                self.skipped.push(Skipped {
                    path: file.display().to_string(),
                    why: format!(
                        "ignore file only partly applied: one expansion takes at most \
                         {MAX_IGNORE_PATTERNS} ignore patterns"
                    ),
                });
                break;
            }
            // Given as written: the builder trims trailing spaces as git does, keeping an
            // escaped one (`foo\ `), which trimming here would have turned into a bad pattern.
            let blank = line.trim().is_empty();
            if blank || line.starts_with('#') || line.len() > MAX_PATTERN_BYTES {
                continue;
            }
            // A pattern git would not take is left out, as git leaves it out.
            if builder.add_line(None, line).is_ok() {
                self.patterns += 1;
            }
        }
        match builder.build() {
            Ok(rules) if !rules.is_empty() => Some(rules),
            Ok(_) => None,
            Err(e) => {
                self.skipped.push(Skipped {
                    path: file.display().to_string(),
                    why: format!("ignore file not applied: {e}"),
                });
                None
            }
        }
    }

    /// The bytes of `file`: none when it is not there; an error when it is not a regular file
    /// (a link is not followed) or is too large.
    fn read(&self, file: &Path) -> Result<Option<Vec<u8>>, String> {
        match std::fs::symlink_metadata(file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
            Ok(meta) if meta.file_type().is_symlink() => {
                Err("a symbolic link: not followed".into())
            }
            Ok(_) => read_regular(file, MAX_IGNORE_FILE_BYTES)
                .map(Some)
                .map_err(|e| e.to_string()),
        }
    }
}

/// The chain of rules in force in `root` from the directories above it, outermost first.
fn above(root: &Path, reader: &mut Reader<'_>) -> Chain {
    let mut ancestors: Vec<&Path> = root.ancestors().skip(1).collect();
    ancestors.reverse();
    (ancestors.into_iter()).fold(Chain::default(), |chain, dir| reader.enter(&chain, dir))
}

/// One directory being walked: the rules in force in it and its entries not yet taken.
struct Level {
    dir: PathBuf,
    chain: Chain,
    entries: std::vec::IntoIter<(OsString, FileType)>,
}

/// Why the walk stopped early, if it did.
enum Stop {
    Visited,
    Files,
}

/// Expands `root` (canonical) into the files under it (pushed to `out`, in path order); what
/// it skips that a person would look for is named in `skipped`: entries that are not regular
/// files (links, FIFOs, sockets, devices), ignore files not read, and where the walk stopped.
pub fn expand(root: &Path, out: &mut Vec<PathBuf>, skipped: &mut Vec<Skipped>) {
    expand_with(root, global_excludes(), out, skipped);
}

/// [`expand`], with `global` as the user's global excludes file.
fn expand_with(
    root: &Path,
    global: Option<PathBuf>,
    out: &mut Vec<PathBuf>,
    skipped: &mut Vec<Skipped>,
) {
    let mut reader = Reader {
        patterns: 0,
        skipped,
        global,
        global_bytes: None,
    };
    let outer = above(root, &mut reader);
    let chain = reader.enter(&outer, root);
    let mut visited = 0usize;
    let mut files = 0usize;
    let mut stop = None;
    let mut stack = match entries(root, &mut visited) {
        Ok(entries) => vec![Level {
            dir: root.to_path_buf(),
            chain,
            entries,
        }],
        Err(()) => {
            stop = Some(Stop::Visited);
            Vec::new()
        }
    };
    while stop.is_none() {
        let Some(level) = stack.last_mut() else {
            break;
        };
        let Some((name, kind)) = level.entries.next() else {
            stack.pop();
            continue;
        };
        let path = level.dir.join(&name);
        let is_dir = kind.is_dir();
        match level.chain.matched(&path, is_dir) {
            Match::Ignore(()) => continue,
            Match::Whitelist(()) => {}
            Match::None if name.as_encoded_bytes().starts_with(b".") => continue,
            Match::None => {}
        }
        if is_dir {
            if SKIPPED_DIRS.contains(&name.to_string_lossy().as_ref()) {
                continue;
            }
            let chain = reader.enter(&level.chain, &path);
            match entries(&path, &mut visited) {
                Ok(entries) => stack.push(Level {
                    dir: path,
                    chain,
                    entries,
                }),
                Err(()) => stop = Some(Stop::Visited),
            }
            continue;
        }
        if files >= MAX_EXPANDED_FILES {
            stop = Some(Stop::Files);
            continue;
        }
        files += 1;
        if kind.is_file() {
            out.push(path);
        } else {
            reader.skipped.push(Skipped {
                path: path.display().to_string(),
                why: not_a_document(kind).into(),
            });
        }
    }
    let why = match stop {
        None => return,
        Some(Stop::Files) => format!(
            "more than {MAX_EXPANDED_FILES} files: only the first {MAX_EXPANDED_FILES} were considered"
        ),
        Some(Stop::Visited) => format!(
            "more than {MAX_VISITED_ENTRIES} entries (files, directories, hidden and ignored ones): \
             the expansion stopped there; name narrower directories"
        ),
    };
    reader.skipped.push(Skipped {
        path: root.display().to_string(),
        why,
    });
}

/// The entries of `dir` by name (their own type: links are not followed), counted into
/// `visited`; `Err` once the count passes [`MAX_VISITED_ENTRIES`]. One that cannot be read is
/// empty, as it was before (the crate skipped it too).
fn entries(
    dir: &Path,
    visited: &mut usize,
) -> Result<std::vec::IntoIter<(OsString, FileType)>, ()> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Ok(Vec::new().into_iter());
    };
    let mut found = Vec::new();
    for entry in read {
        *visited += 1;
        if *visited > MAX_VISITED_ENTRIES {
            return Err(());
        }
        let Ok(entry) = entry else {
            continue;
        };
        if let Ok(kind) = entry.file_type() {
            found.push((entry.file_name(), kind));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found.into_iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        crate::scratch::scratch_dir("walk").canonicalize().unwrap()
    }

    fn write(root: &Path, name: &str, text: &str) {
        let file = root.join(name);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }

    /// The files `root` expands to, relative to it, and what was skipped.
    fn walked(root: &Path) -> (Vec<String>, Vec<Skipped>) {
        let (mut out, mut skipped) = (Vec::new(), Vec::new());
        expand(root, &mut out, &mut skipped);
        let names = (out.iter())
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        (names, skipped)
    }

    #[test]
    fn gitignore_rules_apply_as_git_applies_them() {
        let d = dir();
        std::fs::create_dir_all(d.join(".git")).unwrap();
        write(&d, ".gitignore", "*.log\nbuild-out/\n!keep.log\ndocs\n");
        write(&d, "a.log", "x");
        write(&d, "keep.log", "x");
        write(&d, "build-out/x.rs", "x");
        write(&d, "docs", "a file named like an ignored directory");
        // The deeper file decides: it re-includes what the top one ignores, and ignores more.
        write(&d, "sub/.gitignore", "!*.log\nsecret-ish.txt\n");
        write(&d, "sub/b.log", "x");
        write(&d, "sub/secret-ish.txt", "x");
        write(&d, "sub/main.rs", "x");
        // A directory ignored is not walked: `!` below it cannot bring a file back.
        write(&d, "build-out/.gitignore", "!*\n");
        // Hidden entries stay out unless a rule names them back.
        write(&d, ".hidden.rs", "x");
        write(&d, ".github/workflow.yml", "x");
        write(&d, ".ignore", "!.github\n");
        // `.git/info/exclude` counts at the repository's root.
        write(&d, ".git/info/exclude", "excluded.rs\n");
        write(&d, "excluded.rs", "x");
        write(&d, "src/lib.rs", "x");
        let (names, skipped) = walked(&d);
        assert_eq!(
            names,
            [
                ".github/workflow.yml",
                "keep.log",
                "src/lib.rs",
                "sub/b.log",
                "sub/main.rs"
            ],
            "{skipped:?}"
        );
        assert!(skipped.is_empty(), "{skipped:?}");
    }

    #[test]
    fn the_users_global_excludes_apply_inside_a_repository_only() {
        let (d, config) = (dir(), dir());
        write(&config, "git/ignore", ".idea/\nnotes.local.md\n");
        let global = config.join("git/ignore");
        write(&d, "plain/notes.local.md", "x");
        write(&d, "repo/notes.local.md", "x");
        write(&d, "repo/.idea/workspace.xml", "x");
        write(&d, "repo/src/notes.local.md", "x");
        write(&d, "repo/src/lib.rs", "x");
        std::fs::create_dir_all(d.join("repo/.git")).unwrap();
        // The repository's own rules win over the user's.
        write(&d, "repo/src/.gitignore", "!notes.local.md\n");
        let (mut out, mut skipped) = (Vec::new(), Vec::new());
        expand_with(&d, Some(global), &mut out, &mut skipped);
        let names: Vec<String> = (out.iter())
            .map(|p| p.strip_prefix(&d).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "plain/notes.local.md",
                "repo/src/lib.rs",
                "repo/src/notes.local.md"
            ],
            "{skipped:?}"
        );
    }

    #[test]
    fn a_byte_order_mark_and_an_escaped_trailing_space_are_read_as_git_reads_them() {
        let d = dir();
        std::fs::create_dir_all(d.join(".git")).unwrap();
        write(&d, ".gitignore", "\u{feff}*.log\r\nspaced\\ \r\nplain   \n");
        write(&d, "a.log", "x");
        write(&d, "spaced ", "a name ending in a space");
        write(&d, "spaced", "x");
        write(&d, "plain", "x");
        write(&d, "kept.rs", "x");
        let (names, skipped) = walked(&d);
        assert_eq!(names, ["kept.rs", "spaced"], "{skipped:?}");
    }

    #[test]
    fn gitignore_counts_only_inside_a_repository_and_stops_at_a_nested_one() {
        let d = dir();
        write(&d, ".gitignore", "*.txt\n");
        write(&d, ".ignore", "*.tmp\n");
        write(&d, "a.txt", "x");
        write(&d, "a.tmp", "x");
        let (names, _) = walked(&d);
        assert_eq!(names, ["a.txt"], "not a repository: only .ignore counts");

        std::fs::create_dir_all(d.join(".git")).unwrap();
        std::fs::create_dir_all(d.join("inner/.git")).unwrap();
        write(&d, "inner/b.txt", "x");
        write(&d, "inner/c.tmp", "x");
        let (names, _) = walked(&d);
        // The outer repository's .gitignore stops at the inner one; .ignore reaches down.
        assert_eq!(names, ["inner/b.txt"]);
        // Named from below, the rules of the directories above still apply.
        let (names, _) = walked(&d.join("inner"));
        assert_eq!(names, ["b.txt"]);
    }

    #[test]
    fn an_ignore_file_that_is_not_a_small_regular_file_is_never_read() {
        let d = dir();
        std::fs::create_dir_all(d.join(".git/info")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.join(".gitignore")).unwrap();
        std::os::unix::fs::symlink("/dev/urandom", d.join(".git/info/exclude")).unwrap();
        write(&d, "sub/.ignore", &"*.rs\n".repeat(20_000));
        write(&d, "sub/x.rs", "x");
        write(&d, "lib.rs", "x");
        let (names, skipped) = walked(&d);
        assert_eq!(names, ["lib.rs", "sub/x.rs"]);
        let why = |name: &str| {
            (skipped.iter())
                .find(|s| s.path == d.join(name).display().to_string())
                .map(|s| s.why.clone())
                .unwrap_or_default()
        };
        assert!(why(".gitignore").contains("a symbolic link: not followed"));
        assert!(why(".git/info/exclude").contains("a symbolic link: not followed"));
        assert!(
            why("sub/.ignore").contains("over the 65536-byte limit"),
            "{skipped:?}"
        );
    }

    #[test]
    fn the_walk_stops_after_its_bound_of_entries_whatever_they_are() {
        let d = dir();
        write(&d, ".ignore", "*.o\n");
        for n in 0..MAX_VISITED_ENTRIES {
            std::fs::write(d.join(format!("{n}.o")), "").unwrap();
        }
        write(&d, "z/kept.rs", "x");
        let (names, skipped) = walked(&d);
        assert!(names.is_empty(), "{names:?}");
        assert!(
            skipped[0].why.contains("more than 20000 entries"),
            "{skipped:?}"
        );
    }
}
