//! The documents named for a question, as text: read under the file policy, looked up in the
//! store's cache by content hash and provider, else sent to the chosen model's provider for
//! extraction (Kimi's Files API, GLM's parser) and cached; a provider that cannot extract gets
//! each document named as skipped, with why. A dry run uploads nothing and says what it would do.

use super::ToolContext;
use super::consult::blocking_failure;
use crate::calls::ToolFailure;
use crate::documents::{self, Extracted};
use crate::files::Skipped;
use crate::providers::{DocumentUpload, Resolved};

/// The texts of the documents among `given` for a question to `target`.
pub async fn prepare(
    ctx: &ToolContext,
    target: &Resolved,
    given: &[String],
) -> Result<Extracted, ToolFailure> {
    let provider = target.endpoint.name().to_string();
    let mut out = Extracted {
        by: provider.clone(),
        ..Extracted::default()
    };
    // Most questions name no document: no blocking hop for them (a link named otherwise that
    // points at one is still named as skipped when files are embedded).
    if !given
        .iter()
        .any(|g| documents::is_document(std::path::Path::new(g)))
    {
        return Ok(out);
    }
    let policy = ctx.file_policy();
    let given = given.to_vec();
    // A provider that cannot extract documents gets them named as skipped: none is read.
    let extracts = target.endpoint.extracts_documents();
    let (read, unreadable) =
        crate::spawn::blocking(move || documents::read_named(&given, &policy, extracts))
            .await
            .map_err(blocking_failure)?;
    for skipped in unreadable {
        out.handled.push(skipped.path.clone().into());
        out.skipped.push(skipped);
    }
    // Documents may take at most half the time left: the model needs the rest to answer.
    let now = std::time::Instant::now();
    let documents_by = now + ctx.call.deadline.saturating_duration_since(now) / 2;
    for document in read {
        out.handled.push(document.path.clone());
        let skip = |why: String| Skipped {
            path: document.path.display().to_string(),
            why,
        };
        if !extracts {
            out.skipped.push(skip(format!(
                "{} skipped: {provider} cannot extract documents; choose a kimi or glm model",
                document.name
            )));
            continue;
        }
        if let Some(text) = cached(ctx, &document.sha256, &provider).await {
            out.planned.push(format!(
                "{}: its text from the cache (extracted by {provider} earlier), no upload",
                document.name
            ));
            out.texts.push((document.path, text));
            continue;
        }
        if ctx.dry_run.is_some() {
            out.planned.push(format!(
                "{}: would be uploaded to {provider} for text extraction ({} bytes), then deleted there",
                document.name,
                document.bytes.len()
            ));
            out.skipped.push(skip(format!(
                "dry run: would be extracted by {provider}; not uploaded"
            )));
            continue;
        }
        let upload = DocumentUpload {
            name: &document.name,
            bytes: &document.bytes,
        };
        match target
            .endpoint
            .extract(upload, documents_by, &ctx.call.progress)
            .await
        {
            Ok(text) => {
                keep(ctx, &document.sha256, &provider, &text).await;
                out.texts.push((document.path, text));
            }
            Err(why) => out.skipped.push(skip(format!(
                "extracting {} at {provider} failed: {why}",
                document.name
            ))),
        }
    }
    Ok(out)
}

/// The cached text, if any; a store that cannot be read means extracting again, logged.
async fn cached(ctx: &ToolContext, sha256: &str, provider: &str) -> Option<String> {
    let (sha256, provider) = (sha256.to_string(), provider.to_string());
    match ctx
        .calls
        .store()
        .read(move |store| store.document_text(&sha256, &provider))
        .await
    {
        Ok(found) => found,
        Err(error) => {
            tracing::warn!(%error, "the document cache could not be read");
            None
        }
    }
}

/// Caches an extracted text for the conversation lifetime; a failure is logged (the next call
/// extracts again).
async fn keep(ctx: &ToolContext, sha256: &str, provider: &str, text: &str) {
    let (sha256, provider, text) = (sha256.to_string(), provider.to_string(), text.to_string());
    let ttl = ctx.config.thread_ttl;
    if let Err(error) = ctx
        .calls
        .store()
        .read(move |store| store.keep_document_text(&sha256, &provider, &text, ttl))
        .await
    {
        tracing::warn!(%error, "an extracted document text could not be cached");
    }
}
