//! Scratch directories for the unit tests: one per test process, each test making its own inside
//! it; a later run removes those of runs that have ended, so a failed test's files stay to be
//! looked at until then and the temp dir does not fill up.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const RUN_DIR_PREFIX: &str = "exai-unit-run-";

/// A new, empty directory whose name starts with `what`, under this run's directory.
pub(crate) fn scratch_dir(what: &str) -> PathBuf {
    let dir = run_dir().join(format!("{what}-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let temp = std::env::temp_dir();
        remove_ended_runs(&temp);
        temp.join(format!("{RUN_DIR_PREFIX}{}", std::process::id()))
    })
}

/// Removes the directories of unit-test runs whose process is gone.
fn remove_ended_runs(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ended = name
            .to_str()
            .and_then(|name| name.strip_prefix(RUN_DIR_PREFIX))
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if ended {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scratch_dir_is_new_and_inside_this_runs_own() {
        let (a, b) = (scratch_dir("a"), scratch_dir("a"));
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
        assert_eq!(a.parent(), b.parent());
        let run = a.parent().unwrap().file_name().unwrap().to_string_lossy();
        assert_eq!(run, format!("{RUN_DIR_PREFIX}{}", std::process::id()));
    }

    #[test]
    fn the_directories_of_ended_runs_are_removed_and_live_ones_kept() {
        let temp = scratch_dir("temp");
        // No process has this id (above the kernel's limit of 2^22).
        let ended = temp.join(format!("{RUN_DIR_PREFIX}4999999"));
        let live = temp.join(format!("{RUN_DIR_PREFIX}{}", std::process::id()));
        let other = temp.join("someone-elses");
        for dir in [&ended, &live, &other] {
            std::fs::create_dir_all(dir.join("inside")).unwrap();
        }
        remove_ended_runs(&temp);
        assert!(!ended.exists());
        assert!(live.is_dir() && other.is_dir());
    }
}
