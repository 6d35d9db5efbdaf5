-- The text a provider extracted from a document (PDF, Word, …), by the SHA-256 of the
-- document's bytes and the provider, so a document is uploaded once; the text is the user's
-- document and is deleted when it expires (the conversation lifetime, EXAI_THREAD_TTL_S).
CREATE TABLE document_texts (
    sha256 TEXT NOT NULL,
    provider TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (sha256, provider)
);
CREATE INDEX document_texts_expiry ON document_texts (expires_at_ms);
