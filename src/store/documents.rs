//! The cache of documents' extracted texts, by the SHA-256 of the document and the provider that
//! extracted it: a document is uploaded once while its text lives (`expires_at_ms`), and the
//! text goes with the rest of the store's content when it expires (retention).

use std::time::Duration;

use super::{Param, StoreError, StoreReader, now_ms, required_text};

impl StoreReader {
    /// The text `provider` extracted from the document of hash `sha256`, if it has not expired.
    pub fn document_text(
        &self,
        sha256: &str,
        provider: &str,
    ) -> Result<Option<String>, StoreError> {
        let found = self.rows(
            "SELECT text FROM document_texts \
             WHERE sha256 = ?1 AND provider = ?2 AND expires_at_ms >= ?3",
            &[
                Param::Text(Some(sha256)),
                Param::Text(Some(provider)),
                Param::Int(Some(now_ms())),
            ],
            |row| required_text(row, 0),
        )?;
        Ok(found.into_iter().next())
    }

    /// Keeps the text `provider` extracted from the document of hash `sha256` for `ttl`.
    pub fn keep_document_text(
        &self,
        sha256: &str,
        provider: &str,
        text: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        self.execute(
            "INSERT INTO document_texts (sha256, provider, text, created_at_ms, expires_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (sha256, provider) DO UPDATE SET \
             text = excluded.text, created_at_ms = excluded.created_at_ms, \
             expires_at_ms = excluded.expires_at_ms",
            &[
                Param::Text(Some(sha256)),
                Param::Text(Some(provider)),
                Param::Text(Some(text)),
                Param::Int(Some(now)),
                Param::Int(Some(expires)),
            ],
        )?;
        Ok(())
    }

    /// Deletes the texts past their lifetime; returns how many.
    pub fn expire_document_texts(&self) -> Result<usize, StoreError> {
        self.execute(
            "DELETE FROM document_texts WHERE expires_at_ms < ?1",
            &[Param::Int(Some(now_ms()))],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_found_by_hash_and_provider_until_it_expires() {
        let dir = crate::scratch::scratch_dir("doc-cache");
        let store = StoreReader::open(&dir.join("exai.db")).unwrap();
        let hour = Duration::from_secs(3600);
        store
            .keep_document_text("abc", "kimi", "the text", hour)
            .unwrap();
        assert_eq!(
            store.document_text("abc", "kimi").unwrap().as_deref(),
            Some("the text")
        );
        assert_eq!(
            store.document_text("abc", "glm").unwrap(),
            None,
            "per provider"
        );
        // Kept again (a new extraction): replaced, not duplicated.
        store
            .keep_document_text("abc", "kimi", "newer", hour)
            .unwrap();
        assert_eq!(
            store.document_text("abc", "kimi").unwrap().as_deref(),
            Some("newer")
        );
        store
            .keep_document_text("old", "kimi", "gone", hour)
            .unwrap();
        store
            .execute(
                "UPDATE document_texts SET expires_at_ms = 1 WHERE sha256 = 'old'",
                &[],
            )
            .unwrap();
        assert_eq!(store.document_text("old", "kimi").unwrap(), None, "expired");
        assert_eq!(store.expire_document_texts().unwrap(), 1);
        assert!(store.document_text("abc", "kimi").unwrap().is_some());
    }
}
