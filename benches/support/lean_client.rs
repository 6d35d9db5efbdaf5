//! A lean Streamable HTTP MCP client for the throughput runs: one keep-alive HTTP/1.1
//! connection per session, each request written in one piece and its answer read and checked
//! inline, as load generators (wrk, oha, vegeta) do. The clients share the machine's two cores
//! with the daemon they measure, so every microsecond they spend is one the daemon does not get.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one request may take before the run fails (a hung call must not hang the bench).
const PATIENCE: Duration = Duration::from_secs(30);

pub struct LeanSession {
    stream: TcpStream,
    /// The request's head up to its `Content-Length`, the same for every request.
    head: String,
    next_id: i64,
    read: Vec<u8>,
}

impl LeanSession {
    /// A connection to `addr` for the session `session_id` (opened by a full client), `token`
    /// its bearer and `protocol` the version it negotiated.
    pub async fn connect(addr: &str, token: &str, session_id: &str, protocol: &str) -> Self {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the daemon");
        stream.set_nodelay(true).unwrap();
        let head = format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n\
             Mcp-Session-Id: {session_id}\r\nMCP-Protocol-Version: {protocol}\r\n"
        );
        Self {
            stream,
            head,
            next_id: 1_000_000,
            read: Vec::with_capacity(4096),
        }
    }

    /// Sends `method` with `params` and returns the JSON-RPC response to it.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let body = serde_json::to_vec(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        )
        .unwrap();
        let mut message = Vec::with_capacity(self.head.len() + body.len() + 32);
        message.extend_from_slice(self.head.as_bytes());
        message.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        message.extend_from_slice(&body);
        let answer = tokio::time::timeout(PATIENCE, async {
            self.stream.write_all(&message).await.unwrap();
            self.read_answer().await
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} in {PATIENCE:?}"));
        let (status, body) = answer;
        assert_eq!(status, 200, "{method}: {}", String::from_utf8_lossy(&body));
        response_in(&body, id)
    }

    /// `tools/call` of `name`: its result (a JSON-RPC error fails the run).
    pub async fn call_tool(&mut self, name: &str, arguments: Value) -> Value {
        let mut reply = self
            .request("tools/call", json!({"name": name, "arguments": arguments}))
            .await;
        assert!(reply.get("error").is_none(), "{name}: {reply}");
        reply["result"].take()
    }

    /// Reads one HTTP/1.1 answer: its status and its whole body (by length or chunked).
    async fn read_answer(&mut self) -> (u16, Vec<u8>) {
        let head_end = loop {
            if let Some(end) = find(&self.read, b"\r\n\r\n") {
                break end;
            }
            self.fill().await;
        };
        let head = std::str::from_utf8(&self.read[..head_end]).expect("a text head");
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        let mut length = None;
        let mut chunked = false;
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().expect("a length"));
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
        self.read.drain(..head_end + 4);
        let body = match (chunked, length) {
            (true, _) => self.read_chunked().await,
            (false, Some(length)) => {
                while self.read.len() < length {
                    self.fill().await;
                }
                self.read.drain(..length).collect()
            }
            (false, None) => panic!("an answer with neither a length nor chunks: {status}"),
        };
        (status, body)
    }

    async fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(end) = find(&self.read, b"\r\n") {
                    break end;
                }
                self.fill().await;
            };
            let size_text = std::str::from_utf8(&self.read[..line_end]).expect("a chunk size");
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16).expect("a hex chunk size");
            // The chunk, then its CRLF (the last, empty chunk: the CRLF that ends the body).
            while self.read.len() < line_end + 2 + size + 2 {
                self.fill().await;
            }
            body.extend_from_slice(&self.read[line_end + 2..line_end + 2 + size]);
            self.read.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return body;
            }
        }
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let read = self.stream.read(&mut chunk).await.expect("read the answer");
        assert!(read > 0, "the daemon closed the connection");
        self.read.extend_from_slice(&chunk[..read]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The JSON-RPC response to `id` in an answer's body: a JSON message or an event stream.
fn response_in(body: &[u8], id: i64) -> Value {
    let text = std::str::from_utf8(body).expect("a text body");
    let messages: Vec<Value> = if text.trim_start().starts_with('{') {
        vec![serde_json::from_str(text).expect("a JSON answer")]
    } else {
        text.lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .filter(|data| !data.trim().is_empty())
            .map(|data| serde_json::from_str(data.trim()).expect("a JSON event"))
            .collect()
    };
    messages
        .into_iter()
        .find(|message| message["id"] == id && message.get("method").is_none())
        .unwrap_or_else(|| panic!("no response to {id} in {text}"))
}
