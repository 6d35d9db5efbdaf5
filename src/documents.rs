//! Documents — PDF, Word, spreadsheets, slides — which a model cannot read as text: which files
//! are documents, how a named one is read (the file policy, regular files only, bounded), its
//! content hash, and the texts a provider extracted for one question.
//!
//! Only documents named in `files` are extracted: one found by expanding a directory is listed
//! as skipped, so naming a folder never uploads every PDF in it to a provider.

use std::path::{Path, PathBuf};

use crate::files::{self, Policy, Skipped};

/// The endings of the documents sent for extraction (both Kimi's Files API and GLM's `lite`
/// parser document these).
pub const DOCUMENT_EXTENSIONS: [&str; 7] = ["pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx"];

/// Largest document read (documents run larger than source files; the providers take more).
pub const MAX_DOCUMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Most documents one call reads, and most bytes of them together (all are held at once): past
/// either, the rest are skipped, each named with why.
pub const MAX_DOCUMENTS: usize = 20;
pub const MAX_DOCUMENTS_BYTES: u64 = 64 * 1024 * 1024;

/// Whether `path` names a document (by its ending, any case).
pub fn is_document(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .is_some_and(|e| DOCUMENT_EXTENSIONS.contains(&e.as_str()))
}

/// One named document, read.
pub struct Document {
    /// Its real path (links resolved).
    pub path: PathBuf,
    /// Its file name, as the provider is told.
    pub name: String,
    pub bytes: Vec<u8>,
    /// SHA-256 of the bytes, hex: the cache's key with the provider.
    pub sha256: String,
}

/// Reads the documents among `given` (blocking): those whose real path is a document, under the
/// file policy, regular files of at most [`MAX_DOCUMENT_BYTES`], at most [`MAX_DOCUMENTS`] and
/// [`MAX_DOCUMENTS_BYTES`] together. Paths the policy refuses are left out here: embedding names
/// them as it names any refused file. Without `with_bytes` (a provider that cannot extract them)
/// only their paths and names are found, nothing is read.
pub fn read_named(
    given: &[String],
    policy: &Policy,
    with_bytes: bool,
) -> (Vec<Document>, Vec<Skipped>) {
    let mut read = Vec::new();
    let mut skipped = Vec::new();
    let mut total = 0u64;
    for one in given {
        let Ok(path) = files::resolve(one, policy) else {
            continue;
        };
        if !is_document(&path) || read.iter().any(|d: &Document| d.path == path) {
            continue;
        }
        let skip = |why: String| Skipped {
            path: path.display().to_string(),
            why,
        };
        if read.len() == MAX_DOCUMENTS {
            skipped.push(skip(format!(
                "one call reads at most {MAX_DOCUMENTS} documents"
            )));
            continue;
        }
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        if with_bytes && total + size.min(MAX_DOCUMENT_BYTES + 1) > MAX_DOCUMENTS_BYTES {
            skipped.push(skip(format!(
                "the documents of one call are read up to {} MiB together",
                MAX_DOCUMENTS_BYTES >> 20
            )));
            continue;
        }
        let bytes = match with_bytes {
            true => files::read_regular(&path, MAX_DOCUMENT_BYTES),
            false => Ok(Vec::new()),
        };
        match bytes {
            Ok(bytes) => read.push(Document {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                sha256: sha256_hex(&bytes),
                path,
                bytes: {
                    total += bytes.len() as u64;
                    bytes
                },
            }),
            Err(why) => skipped.push(Skipped {
                path: path.display().to_string(),
                why: why.to_string(),
            }),
        }
    }
    (read, skipped)
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::hex::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// The documents of one question: the texts a provider extracted, and every named document
/// already accounted for (extracted, skipped with why, or — in a dry run — planned).
#[derive(Debug, Default, Clone)]
pub struct Extracted {
    /// Who extracted the texts (the provider's name).
    pub by: String,
    pub texts: Vec<(PathBuf, String)>,
    /// Named documents that were not extracted, with why.
    pub skipped: Vec<Skipped>,
    /// Documents accounted for, by real path.
    pub handled: Vec<PathBuf>,
    /// What a dry run would do with each document.
    pub planned: Vec<String>,
}

impl Extracted {
    /// The text extracted for `path`, if any.
    pub fn text_of(&self, path: &Path) -> Option<&str> {
        self.texts
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, text)| text.as_str())
    }

    /// Whether `path` was named and accounted for here.
    pub fn handled(&self, path: &Path) -> bool {
        self.handled.iter().any(|p| p == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many documents (they compress to nothing in a repository) cannot fill the daemon's
    /// memory: a call reads at most MAX_DOCUMENTS of them, MAX_DOCUMENTS_BYTES together, and
    /// none for a provider that cannot extract them.
    #[test]
    fn the_documents_of_one_call_are_bounded_in_number_and_bytes() {
        let dir = crate::scratch::scratch_dir("documents");
        let named = |count: usize, size: u64| -> Vec<String> {
            (0..count)
                .map(|i| {
                    let path = dir.join(format!("d{size}-{i}.pdf"));
                    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
                    path.display().to_string()
                })
                .collect()
        };
        let policy = Policy::default();
        let many = named(MAX_DOCUMENTS + 5, 10);
        let (read, skipped) = read_named(&many, &policy, true);
        assert_eq!((read.len(), skipped.len()), (MAX_DOCUMENTS, 5));
        assert!(
            skipped[0].why.contains("at most 20 documents"),
            "{}",
            skipped[0].why
        );
        let (read, _) = read_named(&many, &policy, false);
        assert!(read.iter().all(|d| d.bytes.is_empty()), "read for nobody");
        let big = named(5, 15 << 20);
        let (read, skipped) = read_named(&big, &policy, true);
        assert_eq!((read.len(), skipped.len()), (4, 1));
        assert!(
            skipped[0].why.contains("up to 64 MiB together"),
            "{}",
            skipped[0].why
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn documents_are_known_by_their_ending() {
        assert!(is_document(Path::new("/a/Report.PDF")));
        assert!(is_document(Path::new("/a/b.docx")));
        assert!(!is_document(Path::new("/a/b.rs")));
        assert!(!is_document(Path::new("/a/pdf")));
    }

    #[test]
    fn the_hash_is_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
