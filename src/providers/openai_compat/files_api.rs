//! Documents through a provider's file API, shaped from the providers' documentation: Kimi's
//! Files API (`POST /files` with `purpose=file-extract`, `GET /files/{id}/content`,
//! `DELETE /files/{id}`) and GLM's file parser (`POST /files/parser/create` with
//! `tool_type=lite`, then `GET /files/parser/result/{task_id}/text` until it succeeds).
//!
//! Every request is bounded by the idle timeout and the call's deadline, every answer by a
//! cap, polling by the deadline and a count; an id the provider hands back is checked before it
//! goes into a path. A file uploaded to Kimi is deleted afterwards, also when the call stops
//! half-way (a bounded background request). GLM's parser has no delete: its tasks stay under
//! GLM's own retention.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Capped, OpenAiCompatible, endpoint_url, read_capped, size_text};
use crate::config::Secret;
use crate::providers::CallObserver;
use crate::providers::client::{DocumentUpload, ExtractError};
use crate::providers::connections::Checkout;
use crate::providers::connections::{Answer, TransportError};
use crate::providers::dialect::{Extraction, dialect};

/// Most bytes of extracted text read from a provider (a hostile one could send more).
pub(crate) const MAX_EXTRACTED: usize = 4 * 1024 * 1024;
/// Most bytes of a file object or task answer read.
const MAX_META: usize = 64 * 1024;
/// Most polls of a GLM parser task, whatever the deadline.
const MAX_POLLS: u32 = 300;
/// The longest pause between polls.
const MAX_POLL_PAUSE: Duration = Duration::from_secs(3);
/// How long the background delete of an uploaded file may take.
const DELETE_LIMIT: Duration = Duration::from_secs(15);
/// The parser GLM is asked to use: `lite` reads every office format exai sends.
const GLM_TOOL_TYPE: &str = "lite";

/// A file object of Kimi's Files API (the fields exai reads).
#[derive(Deserialize)]
struct FileObject {
    id: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    status_details: Option<String>,
}

/// The extracted content Kimi answers (a JSON object with `content`).
#[derive(Deserialize)]
struct FileContent {
    content: String,
}

/// GLM's answer to a new parser task.
#[derive(Deserialize)]
struct ParserTask {
    #[serde(default)]
    task_id: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// GLM's parser result: `processing`, `succeeded` (with `content`) or `failed`.
#[derive(Deserialize)]
struct ParserResult {
    status: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    content: Option<String>,
}

/// Whether `id` may go into a URL path: what providers hand out, nothing that moves the path.
fn safe_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A multipart/form-data body of text fields and one file, and its boundary.
fn multipart(fields: &[(&str, &str)], file_name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = format!("exai-{}", uuid::Uuid::now_v7().simple());
    let mut body = Vec::with_capacity(bytes.len() + 512);
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    // The name is the file's own, less anything that would break the header.
    let name: String = file_name
        .chars()
        .filter(|c| !matches!(c, '"' | '\r' | '\n' | '\\'))
        .collect();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (boundary, body)
}

/// Deletes an uploaded file when dropped: after the content was read, or when the call stopped
/// half-way. The request runs in the background, bounded by [`DELETE_LIMIT`].
struct DeleteOnDrop {
    http: reqwest::Client,
    url: reqwest::Url,
    key: Option<Secret>,
    provider: String,
    id: String,
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let mut request = self.http.delete(self.url.clone());
        if let Some(key) = &self.key {
            request = request.bearer_auth(key.expose());
        }
        let (provider, id) = (self.provider.clone(), self.id.clone());
        crate::spawn::in_current_span(async move {
            match tokio::time::timeout(DELETE_LIMIT, request.send()).await {
                Ok(Ok(answer)) if answer.status().is_success() => {
                    tracing::info!(%provider, file = %id, "uploaded document deleted at the provider");
                }
                Ok(Ok(answer)) => {
                    tracing::warn!(%provider, file = %id, status = answer.status().as_u16(), "the provider refused to delete an uploaded document");
                }
                Ok(Err(error)) => {
                    tracing::warn!(%provider, file = %id, error = %error.without_url(), "an uploaded document could not be deleted");
                }
                Err(_) => {
                    tracing::warn!(%provider, file = %id, "deleting an uploaded document took too long");
                }
            }
        });
    }
}

impl OpenAiCompatible {
    /// `path` on this endpoint's base URL.
    fn files_url(&self, path: &str) -> Result<reqwest::Url, ExtractError> {
        endpoint_url(self.base_url.expose(), path, self.drop_userinfo).map_err(|why| {
            ExtractError(format!(
                "not a usable URL: {}",
                self.clean(&why.to_string())
            ))
        })
    }

    /// A document's text through the provider's file API, before `deadline`.
    pub async fn extract(
        &self,
        document: DocumentUpload<'_>,
        deadline: Instant,
        observer: &dyn CallObserver,
    ) -> Result<String, ExtractError> {
        let Some(way) = dialect(self.kind).document_extraction() else {
            return Err(ExtractError(format!(
                "{} cannot extract documents",
                self.name
            )));
        };
        observer.stage(format!("extracting {} at {}", document.name, self.name));
        tracing::info!(provider = %self.name, document = document.name, bytes = document.bytes.len(), "document sent for extraction");
        let work = async {
            match way {
                Extraction::FilesApi => self.files_api(&document).await,
                Extraction::Parser => self.parser(&document, deadline).await,
            }
        };
        match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(answer) => answer,
            Err(_) => Err(ExtractError(format!(
                "{} had not extracted the text within half the call's time left (the model \
                 needs the rest)",
                self.name
            ))),
        }
    }

    /// Sends `request` and reads its answer, at most `cap` bytes; a refusal is named with the
    /// provider's words, masked.
    async fn exchange(
        &self,
        (request, _connection): (reqwest::RequestBuilder, Checkout),
        what: &str,
        cap: usize,
    ) -> Result<Vec<u8>, ExtractError> {
        let failed = |detail: String| ExtractError(format!("{what}: {detail}"));
        let response = match tokio::time::timeout(self.idle_timeout, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(failed(self.describe(TransportError::Pooled(e)))),
            Err(_) => {
                return Err(failed(format!(
                    "no answer within {}s",
                    self.idle_timeout.as_secs()
                )));
            }
        };
        let status = response.status();
        if status.is_redirection() {
            return Err(failed(format!(
                "HTTP {}, a redirect (not followed)",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            let (message, _) = self.error_message(Answer::Pooled(response)).await;
            return Err(failed(format!("HTTP {}: {message}", status.as_u16())));
        }
        read_capped(Answer::Pooled(response), cap, self.idle_timeout)
            .await
            .map_err(|e| match e {
                Capped::Idle => failed("the answer stopped coming".into()),
                Capped::Failed(e) => failed(self.describe(e)),
                Capped::TooLarge => failed(format!("the answer is larger than {}", size_text(cap))),
            })
    }

    /// JSON of type `T` from `bytes`, or the start of what came instead.
    fn parsed<T: for<'de> Deserialize<'de>>(
        &self,
        bytes: &[u8],
        what: &str,
    ) -> Result<T, ExtractError> {
        serde_json::from_slice(bytes).map_err(|e| {
            ExtractError(format!(
                "{what}: not the documented answer ({}): {:?}",
                self.shown(&e.to_string()),
                self.shown(&String::from_utf8_lossy(&bytes[..bytes.len().min(200)]))
            ))
        })
    }

    fn post_multipart(
        &self,
        url: &reqwest::Url,
        boundary: &str,
        body: Vec<u8>,
    ) -> (reqwest::RequestBuilder, Checkout) {
        let (request, connection) = self.request(reqwest::Method::POST, url);
        let request = request
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        (request, connection)
    }

    /// Kimi: upload with `purpose=file-extract`, read the extracted content, delete the file.
    async fn files_api(&self, document: &DocumentUpload<'_>) -> Result<String, ExtractError> {
        let url = self.files_url("/files")?;
        let (boundary, body) = multipart(
            &[("purpose", "file-extract")],
            document.name,
            document.bytes,
        );
        let answer = self
            .exchange(
                self.post_multipart(&url, &boundary, body),
                "upload",
                MAX_META,
            )
            .await?;
        let file: FileObject = self.parsed(&answer, "upload")?;
        if !safe_id(&file.id) {
            return Err(ExtractError(format!(
                "upload: the file id {:?} is not one exai uses in a URL",
                self.shown(&file.id)
            )));
        }
        let _delete = DeleteOnDrop {
            http: self.connections.checkout().http.clone(),
            url: self.files_url(&format!("/files/{}", file.id))?,
            key: self.api_key.clone(),
            provider: self.name.clone(),
            id: file.id.clone(),
        };
        if file.status.as_deref() == Some("error") {
            return Err(ExtractError(format!(
                "the provider could not read it: {}",
                self.shown(file.status_details.as_deref().unwrap_or("no details"))
            )));
        }
        let url = self.files_url(&format!("/files/{}/content", file.id))?;
        let content = self
            .exchange(
                self.request(reqwest::Method::GET, &url),
                "reading the extracted text",
                MAX_EXTRACTED,
            )
            .await?;
        // Documented as the extracted content: a JSON object with `content`, or the text itself.
        let text = match serde_json::from_slice::<FileContent>(&content) {
            Ok(parsed) => parsed.content,
            Err(_) => String::from_utf8_lossy(&content).into_owned(),
        };
        Ok(text)
    }

    /// GLM: create a parser task with the file, then poll its text until it succeeds, fails,
    /// the deadline passes or the polls run out.
    async fn parser(
        &self,
        document: &DocumentUpload<'_>,
        deadline: Instant,
    ) -> Result<String, ExtractError> {
        let url = self.files_url("/files/parser/create")?;
        let file_type = std::path::Path::new(document.name)
            .extension()
            .map(|e| e.to_string_lossy().to_uppercase())
            .unwrap_or_default();
        let (boundary, body) = multipart(
            &[("tool_type", GLM_TOOL_TYPE), ("file_type", &file_type)],
            document.name,
            document.bytes,
        );
        let answer = self
            .exchange(
                self.post_multipart(&url, &boundary, body),
                "creating the parser task",
                MAX_META,
            )
            .await?;
        let task: ParserTask = self.parsed(&answer, "creating the parser task")?;
        let Some(task_id) = task.task_id.filter(|id| safe_id(id)) else {
            return Err(ExtractError(format!(
                "creating the parser task: no usable task id ({})",
                self.shown(task.message.as_deref().unwrap_or("no message"))
            )));
        };
        let url = self.files_url(&format!("/files/parser/result/{task_id}/text"))?;
        let mut pause = Duration::from_millis(250);
        for _ in 0..MAX_POLLS {
            let answer = self
                .exchange(
                    self.request(reqwest::Method::GET, &url),
                    "reading the parser result",
                    MAX_EXTRACTED,
                )
                .await?;
            let result: ParserResult = self.parsed(&answer, "reading the parser result")?;
            match result.status.as_str() {
                "succeeded" => {
                    return result.content.ok_or_else(|| {
                        ExtractError("the parser succeeded but sent no text".into())
                    });
                }
                "processing" => {}
                other => {
                    return Err(ExtractError(format!(
                        "the parser task {}: {}",
                        self.shown(other),
                        self.shown(result.message.as_deref().unwrap_or("no message"))
                    )));
                }
            }
            if Instant::now() + pause >= deadline {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_POLL_PAUSE);
        }
        Err(ExtractError(format!(
            "the parser task was still processing when exai stopped waiting (task {task_id})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_would_move_the_path_are_refused() {
        assert!(safe_id("cn1ab2-X_9"));
        for bad in ["", "../x", "a/b", "a?b", "a%2f", &"x".repeat(129)] {
            assert!(!safe_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_multipart_body_carries_the_fields_and_the_file() {
        let (boundary, body) = multipart(&[("purpose", "file-extract")], "a\"b.pdf", b"%PDF-1.4");
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains("name=\"purpose\"\r\n\r\nfile-extract\r\n"));
        assert!(text.contains("filename=\"ab.pdf\""));
        assert!(text.ends_with(&format!("%PDF-1.4\r\n--{boundary}--\r\n")));
    }
}
