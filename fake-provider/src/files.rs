//! The providers' document endpoints, shaped from their documentation: Kimi's Files API
//! (`POST /files` multipart with `purpose=file-extract` → a file object; `GET /files/{id}/content`
//! → `{"content": …, "file_type", "filename", "title", "type": "file"}`; `DELETE /files/{id}`)
//! and GLM's file parser (`POST /files/parser/create` multipart with `file`, `tool_type`,
//! `file_type` → `{"success", "message", "task_id"}`; `GET /files/parser/result/{task_id}/text`
//! → `{"status": "processing"|"succeeded"|"failed", "message", "content", "task_id"}`, the
//! first poll of each task answered `processing`).
//!
//! "Extraction" is the printable text runs found in the bytes (a PDF's strings, a stored
//! .docx's XML), so a test can check a phrase of its document reached the model. Hostile
//! answers by file name: `fake-garbage` gets an upload answer that is not JSON, `fake-huge` an
//! extracted content of 8 MiB, `fake-processing` a parser task that never finishes. `GET /stats` counts uploads, deletes,
//! files still held, parser tasks and polls under `"files"`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::App;

/// What the document endpoints hold and count.
#[derive(Default)]
pub(crate) struct Files(Mutex<Held>);

#[derive(Default)]
struct Held {
    /// Extracted text by file id (Kimi) or task id (GLM).
    texts: HashMap<String, (String, String)>,
    /// Polls seen per parser task.
    polls: HashMap<String, u32>,
    uploads: u64,
    deletes: u64,
    parser_tasks: u64,
    parser_polls: u64,
    next: u64,
}

impl Files {
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn snapshot(&self) -> Value {
        let held = self.lock();
        json!({
            "uploads": held.uploads,
            "deletes": held.deletes,
            "held": held.texts.len() - held.polls.len(),
            "parser_tasks": held.parser_tasks,
            "parser_polls": held.parser_polls,
        })
    }

    pub(crate) fn reset(&self) {
        *self.lock() = Held::default();
    }
}

/// One part of a multipart/form-data body.
struct Part {
    name: String,
    file_name: Option<String>,
    data: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The parts of a multipart body (a plain reading: enough for exai's requests).
fn parts(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Part>, String> {
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("multipart/form-data"))
        .and_then(|v| v.split("boundary=").nth(1))
        .ok_or("not multipart/form-data with a boundary")?;
    let delimiter = format!("--{boundary}");
    let mut found = Vec::new();
    let mut rest = body;
    while let Some(start) = find(rest, delimiter.as_bytes()) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let head_end = find(rest, b"\r\n\r\n").ok_or("a part without headers")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let data_start = head_end + 4;
        let end = find(&rest[data_start..], format!("\r\n{delimiter}").as_bytes())
            .ok_or("a part without its end")?;
        let quoted = |key: &str| {
            head.split(&format!("{key}=\""))
                .nth(1)
                .and_then(|v| v.split('"').next())
                .map(str::to_owned)
        };
        found.push(Part {
            name: quoted(" name")
                .or_else(|| quoted(";name"))
                .unwrap_or_default(),
            file_name: quoted("filename"),
            data: rest[data_start..data_start + end].to_vec(),
        });
        rest = &rest[data_start + end + 2..];
    }
    Ok(found)
}

/// The printable runs of at least four characters in `bytes`, one a line.
fn printable_text(bytes: &[u8]) -> String {
    let mut runs = Vec::new();
    let mut run = String::new();
    for &b in bytes {
        if (0x20..0x7f).contains(&b) {
            run.push(b as char);
        } else {
            if run.len() >= 4 {
                runs.push(std::mem::take(&mut run));
            }
            run.clear();
        }
    }
    if run.len() >= 4 {
        runs.push(run);
    }
    runs.join("\n")
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"message": message, "type": "invalid_request_error"}})),
    )
        .into_response()
}

/// The uploaded file's name and what the fake extracts from it, or why the form is refused.
fn uploaded(
    headers: &HeaderMap,
    body: &[u8],
    wanted: &[(&str, Option<&str>)],
) -> Result<(String, String, usize), String> {
    let parts = parts(headers, body)?;
    for (field, value) in wanted {
        let given = parts
            .iter()
            .find(|p| p.name == *field)
            .map(|p| String::from_utf8_lossy(&p.data).into_owned());
        match (given, value) {
            (None, _) => return Err(format!("missing form field '{field}'")),
            (Some(given), Some(value)) if given != *value => {
                return Err(format!("{field} must be '{value}', not '{given}'"));
            }
            _ => {}
        }
    }
    let file = parts
        .iter()
        .find(|p| p.name == "file" && p.file_name.is_some())
        .ok_or("missing form field 'file'")?;
    let name = file.file_name.clone().unwrap_or_default();
    let text = format!(
        "extracted by the fake from {name}:\n{}",
        printable_text(&file.data)
    );
    Ok((name, text, file.data.len()))
}

/// `POST /files`: Kimi's upload (`purpose=file-extract`).
pub(crate) async fn upload(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (name, text, size) = match uploaded(&headers, &body, &[("purpose", Some("file-extract"))]) {
        Ok(found) => found,
        Err(why) => return bad_request(&why),
    };
    if name.contains("fake-garbage") {
        return (StatusCode::OK, "<html>not a file object</html>").into_response();
    }
    let mut held = app.files.lock();
    held.uploads += 1;
    held.next += 1;
    let id = format!("cv{:08}fake", held.next);
    held.texts.insert(id.clone(), (name.clone(), text));
    Json(json!({
        "id": id, "object": "file", "bytes": size, "created_at": 1_700_000_000u64,
        "filename": name, "purpose": "file-extract", "status": "ok", "status_details": ""
    }))
    .into_response()
}

fn no_file(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"message": format!("file {id} not found"), "type": "resource_not_found_error"}})),
    )
        .into_response()
}

/// `GET /files/{id}/content`: the extracted text.
pub(crate) async fn content(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let held = app.files.lock();
    match held.texts.get(&id) {
        Some((name, _)) if name.contains("fake-huge") => Json(json!({
            "content": "x".repeat(8 * 1024 * 1024), "file_type": "application/pdf",
            "filename": name, "title": "", "type": "file"
        }))
        .into_response(),
        Some((name, text)) => Json(json!({
            "content": text, "file_type": "application/octet-stream", "filename": name,
            "title": "", "type": "file"
        }))
        .into_response(),
        None => no_file(&id),
    }
}

/// `DELETE /files/{id}`.
pub(crate) async fn delete(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let mut held = app.files.lock();
    if held.texts.remove(&id).is_none() {
        return no_file(&id);
    }
    held.deletes += 1;
    Json(json!({"deleted": true, "id": id, "object": "file"})).into_response()
}

/// `POST /files/parser/create`: GLM's parser task.
pub(crate) async fn parser_create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (name, text, _) =
        match uploaded(&headers, &body, &[("tool_type", None), ("file_type", None)]) {
            Ok(found) => found,
            Err(why) => return bad_request(&why),
        };
    let mut held = app.files.lock();
    held.parser_tasks += 1;
    held.next += 1;
    let task_id = format!("task_{:08}", held.next);
    held.texts.insert(task_id.clone(), (name, text));
    held.polls.insert(task_id.clone(), 0);
    Json(json!({"success": true, "message": "任务创建成功", "task_id": task_id})).into_response()
}

/// `GET /files/parser/result/{task_id}/{format_type}`: `processing` at the first poll, then the text.
pub(crate) async fn parser_result(
    State(app): State<Arc<App>>,
    Path((task_id, format_type)): Path<(String, String)>,
) -> Response {
    if format_type != "text" {
        return bad_request("format_type must be text or download_link; the fake serves text");
    }
    let mut held = app.files.lock();
    held.parser_polls += 1;
    let Some(polls) = held.polls.get_mut(&task_id) else {
        return no_file(&task_id);
    };
    *polls += 1;
    let endless = held
        .texts
        .get(&task_id)
        .is_some_and(|(name, _)| name.contains("fake-processing"));
    let Some(polls) = held.polls.get(&task_id).copied() else {
        return no_file(&task_id);
    };
    if polls == 1 || endless {
        return Json(json!({"status": "processing", "message": "解析中", "task_id": task_id}))
            .into_response();
    }
    let text = held.texts.get(&task_id).map(|(_, t)| t.clone());
    Json(json!({
        "status": "succeeded", "message": "结果获取成功", "content": text,
        "task_id": task_id, "parsing_result_url": null
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_parts_and_printable_text() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "multipart/form-data; boundary=XyZ".parse().unwrap(),
        );
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfile-extract\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\n\r\n\x00\x01(Hello PDF) Tj\x02\r\n--XyZ--\r\n";
        let found = parts(&headers, body).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].name, "purpose");
        assert_eq!(found[1].file_name.as_deref(), Some("a.pdf"));
        assert_eq!(printable_text(&found[1].data), "(Hello PDF) Tj");
    }
}
