//! Documents (PDF, Word) through the providers' file APIs, against the fake's implementation of
//! Kimi's Files API and GLM's file parser: the extracted text reaches the model, a document is
//! uploaded once (cached by content hash), uploads are deleted, a provider that cannot extract
//! names the documents it skipped, refused documents stay refused, a dry run uploads nothing.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// A minimal PDF whose page shows `text`.
fn pdf(text: &str) -> Vec<u8> {
    format!(
        "%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
         2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n\
         3 0 obj << /Type /Page /Parent 2 0 R /Contents 4 0 R >> endobj\n\
         4 0 obj << >> stream\nBT /F1 12 Tf ({text}) Tj ET\nendstream endobj\n\
         \x00\x01\x02 trailer << /Root 1 0 R >>\n%%EOF\n"
    )
    .into_bytes()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A minimal .docx: a zip (stored, no compression) holding `word/document.xml` with `text`.
fn docx(text: &str) -> Vec<u8> {
    let name = b"word/document.xml";
    let xml = format!(
        "<?xml version=\"1.0\"?><w:document xmlns:w=\"http://schemas.openxmlformats.org/\
         wordprocessingml/2006/main\"><w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body></w:document>"
    );
    let data = xml.as_bytes();
    let (crc, size) = (crc32(data), data.len() as u32);
    let mut zip = Vec::new();
    let header = |sig: u32, central: bool| {
        let mut h = sig.to_le_bytes().to_vec();
        if central {
            h.extend_from_slice(&20u16.to_le_bytes());
        }
        for v in [20u16, 0, 0, 0, 0] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        for v in [crc, size, size] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        if central {
            for v in [0u16, 0, 0] {
                h.extend_from_slice(&v.to_le_bytes());
            }
            h.extend_from_slice(&0u32.to_le_bytes());
            h.extend_from_slice(&0u32.to_le_bytes());
        }
        h.extend_from_slice(name);
        h
    };
    zip.extend(header(0x0403_4b50, false));
    zip.extend_from_slice(data);
    let central_at = zip.len() as u32;
    let central = header(0x0201_4b50, true);
    zip.extend_from_slice(&central);
    zip.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    for v in [0u16, 0, 1, 1] {
        zip.extend_from_slice(&v.to_le_bytes());
    }
    zip.extend_from_slice(&(central.len() as u32).to_le_bytes());
    zip.extend_from_slice(&central_at.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip
}

fn folder() -> PathBuf {
    temp_home().canonicalize().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    std::fs::write(dir.join(name), bytes).unwrap();
    path(&dir.join(name))
}

fn files_stat(fake: &Fake, name: &str) -> u64 {
    fake.stats()["files"][name].as_u64().unwrap()
}

/// The text of every message of the last request the fake got for `model`.
fn sent_text(fake: &Fake, model: &str) -> String {
    fake.last_messages(model)
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn ask(client: &Client, args: Value) -> String {
    let result = client.call_tool(chat_with(args)).await.unwrap();
    let text = all_text_of(&result);
    assert_eq!(result.is_error, Some(false), "{text}");
    text
}

#[tokio::test]
async fn a_pdf_and_a_docx_reach_a_kimi_model_as_extracted_text_uploaded_once_then_deleted() {
    let fake = Fake::start();
    let daemon = every_provider(&fake, &[]);
    let dir = folder();
    let report = write(
        &dir,
        "report.pdf",
        &pdf("Quarterly figures rose by seven percent"),
    );
    let letter = write(&dir, "letter.docx", &docx("The docx says hello"));
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    ask(
        &client,
        json!({"prompt": "Summarise", "model": "kimi:kimi-k2.6", "files": [report, letter]}),
    )
    .await;
    let sent = sent_text(&fake, "kimi-k2.6");
    assert!(
        sent.contains("Quarterly figures rose by seven percent"),
        "{sent}"
    );
    assert!(sent.contains("<w:t>The docx says hello</w:t>"), "{sent}");
    assert!(
        sent.contains("report.pdf (text extracted by kimi) ---"),
        "{sent}"
    );
    assert_eq!(files_stat(&fake, "uploads"), 2);
    wait_until("both uploads deleted", Duration::from_secs(10), || {
        (files_stat(&fake, "deletes") == 2).then_some(())
    });
    assert_eq!(files_stat(&fake, "held"), 0);

    // The same PDF again: its text from the cache, nothing uploaded.
    ask(
        &client,
        json!({"prompt": "Again", "model": "kimi:kimi-k2.6", "files": [report]}),
    )
    .await;
    assert!(sent_text(&fake, "kimi-k2.6").contains("Quarterly figures rose by seven percent"));
    assert_eq!(files_stat(&fake, "uploads"), 2, "the PDF was uploaded once");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn glm_extracts_through_its_file_parser_polling_until_done() {
    let fake = Fake::start();
    let daemon = every_provider(&fake, &[]);
    let dir = folder();
    let report = write(&dir, "budget.pdf", &pdf("GLM parsed this budget"));
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    ask(
        &client,
        json!({"prompt": "Summarise", "model": "glm:glm-5.2", "files": [report]}),
    )
    .await;
    let sent = sent_text(&fake, "glm-5.2");
    assert!(sent.contains("GLM parsed this budget"), "{sent}");
    assert!(sent.contains("(text extracted by glm)"), "{sent}");
    assert_eq!(files_stat(&fake, "parser_tasks"), 1);
    assert!(
        files_stat(&fake, "parser_polls") >= 2,
        "polled past processing"
    );
    assert_eq!(
        files_stat(&fake, "uploads"),
        0,
        "GLM's parser, not Kimi's files"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_provider_that_cannot_extract_names_the_documents_it_skipped() {
    let fake = Fake::start();
    let daemon = every_provider(&fake, &[]);
    let dir = folder();
    let report = write(&dir, "report.pdf", &pdf("never sent"));
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let text = ask(
        &client,
        json!({"prompt": "Summarise", "model": "openai:gpt-5", "files": [report]}),
    )
    .await;
    assert!(
        text.contains(
            "report.pdf skipped: openai cannot extract documents; choose a kimi or glm model"
        ),
        "{text}"
    );
    assert!(!sent_text(&fake, "gpt-5").contains("never sent"));
    assert_eq!(files_stat(&fake, "uploads"), 0);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn refused_documents_stay_refused_and_a_garbage_answer_is_named() {
    let fake = Fake::start();
    let daemon = every_provider(&fake, &[]);
    let dir = folder();
    // A credential directory, a link into it, a FIFO, a document over the size limit.
    std::fs::create_dir_all(dir.join(".ssh")).unwrap();
    let secret = write(&dir.join(".ssh"), "keys.pdf", &pdf("private key material"));
    std::os::unix::fs::symlink(dir.join(".ssh/keys.pdf"), dir.join("innocent.pdf")).unwrap();
    let fifo = dir.join("pipe.pdf");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let big = std::fs::File::create(dir.join("big.pdf")).unwrap();
    big.set_len(exai::documents::MAX_DOCUMENT_BYTES + 1)
        .unwrap();
    let garbage = write(&dir, "fake-garbage.pdf", &pdf("x"));
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let text = ask(
        &client,
        json!({"prompt": "Summarise", "model": "kimi:kimi-k2.6", "files": [
            secret, path(&dir.join("innocent.pdf")), path(&fifo), path(&dir.join("big.pdf")), garbage
        ]}),
    )
    .await;
    assert_eq!(
        text.matches("credentials directory").count(),
        2,
        "the file and the link to it: {text}"
    );
    assert!(text.contains("named pipe"), "{text}");
    assert!(text.contains("over the 16777216-byte limit"), "{text}");
    assert!(
        text.contains(
            "extracting fake-garbage.pdf at kimi failed: upload: not the documented answer"
        ),
        "{text}"
    );
    assert!(!sent_text(&fake, "kimi-k2.6").contains("private key material"));
    assert_eq!(files_stat(&fake, "uploads"), 0);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_dry_run_uploads_no_document_and_says_which_would_be() {
    let fake = Fake::start();
    let daemon = every_provider(&fake, &[]);
    let dir = folder();
    let report = write(&dir, "plan.pdf", &pdf("dry run text"));
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let text = ask(
        &client,
        json!({"prompt": "Summarise", "model": "kimi:kimi-k2.6", "files": [report], "dry_run": true}),
    )
    .await;
    assert!(
        text.contains("plan.pdf: would be uploaded to kimi for text extraction"),
        "{text}"
    );
    assert!(!text.contains("kimi-test-key"), "{text}");
    let stats = fake.stats();
    assert_eq!(stats["requests"], 0, "{stats}");
    assert_eq!(stats["files"]["uploads"], 0, "{stats}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn hostile_extractions_are_bounded_and_named() {
    let fake = Fake::start();
    // A short call: a parser task that never finishes may take half of it, the rest is for
    // fitting the question (the tokenizer's first load is slow in a debug build on a busy
    // machine: 10 s in all was once too little) and the model.
    let daemon = every_provider(&fake, &[("EXAI_CALL_TIMEOUT_S", "20")]);
    let dir = folder();
    let endless = write(&dir, "fake-processing.pdf", &pdf("never parsed"));
    let huge = write(&dir, "fake-huge.pdf", &pdf("huge"));
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let started = std::time::Instant::now();
    let text = ask(
        &client,
        json!({"prompt": "Summarise", "model": "glm:glm-5.2", "files": [endless]}),
    )
    .await;
    assert!(
        text.contains("extracting fake-processing.pdf at glm failed"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the call's deadline held"
    );
    let text = ask(
        &client,
        json!({"prompt": "Summarise", "model": "kimi:kimi-k2.6", "files": [huge]}),
    )
    .await;
    assert!(text.contains("the answer is larger than 4 MiB"), "{text}");
    wait_until("the huge upload deleted", Duration::from_secs(10), || {
        (files_stat(&fake, "deletes") == 1).then_some(())
    });
    client.cancel().await.unwrap();
}
