//! Test harness: the fake provider, a daemon in its own EXAI_HOME, and MCP clients over `exai stdio`.
#![allow(dead_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use exai::store::{StoreLocation, StoreReader};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, ClientRequest, Implementation,
    ProgressNotificationParam, Request,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RequestHandle, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

pub const EXAI: &str = env!("CARGO_BIN_EXE_exai");

/// Kills the child when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` until it returns Some, or panics after `limit` naming `what`.
pub fn wait_until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub async fn wait_until_async<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    wait_for(what, limit, async || check()).await
}

/// Like [`wait_until`], its check awaited (a request to the daemon, say).
pub async fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The scripted OpenAI-compatible fake provider, in this process on its own thread and runtime
/// (stopped, its connections dropped, when this is dropped).
pub struct Fake {
    pub url: String,
    _server: exai_fake_provider::Running,
}

impl Fake {
    pub fn start() -> Self {
        Self::start_with(exai_fake_provider::Options::default())
    }

    /// A fake that serves TLS too, offering `tls` (its certificate signed by the test CA,
    /// which [`trust_test_ca`] writes out). `url` stays plain, for `/stats`.
    pub fn start_tls(tls: exai_fake_provider::Tls) -> Self {
        Self::start_with(exai_fake_provider::Options {
            tls: Some(tls),
            ..Default::default()
        })
    }

    /// A fake with `options` (a benchmark's runs on one worker thread: it takes less of the
    /// machine it shares with the daemon it measures).
    pub fn start_with(options: exai_fake_provider::Options) -> Self {
        let server = exai_fake_provider::start(options).expect("start fake provider");
        Self {
            url: server.url(),
            _server: server,
        }
    }

    /// The fake's `https://` URL (only a fake started with TLS, [`Fake::start_tls`] or
    /// [`Fake::start_with`], answers it).
    pub fn tls_url(&self) -> String {
        self.url.replacen("http://", "https://", 1)
    }

    /// The messages of the last request the fake received for `model`.
    pub fn last_messages(&self, model: &str) -> Vec<Value> {
        last_body(self, model)["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn stats(&self) -> Value {
        let body = http_get(&format!("{}/stats", self.url));
        serde_json::from_str(&body).expect("stats json")
    }
}

/// Minimal blocking HTTP GET over std (tests avoid pulling a blocking client).
pub fn http_get(url: &str) -> String {
    http_request("GET", url, &[], "").1
}

/// (status, body) of one HTTP/1.1 request.
pub fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest
        .split_once('/')
        .map(|(a, p)| (a, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let stream = std::net::TcpStream::connect(authority).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    exchange(stream, authority, method, &path, headers, body)
}

/// (status, body) of one HTTP/1.1 request over the daemon's Unix socket, with `Host: host`.
pub fn socket_request(
    socket: &Path,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    exchange(stream, host, method, path, headers, "")
}

fn exchange(
    mut stream: impl std::io::Read + std::io::Write,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Waits until the daemon has `n` calls in flight.
pub async fn calls_in_flight(daemon: &Daemon, n: u64) {
    wait_until_async(
        &format!("{n} call(s) in flight"),
        Duration::from_secs(10),
        || (daemon.healthz()["calls_in_flight"].as_u64()? == n).then_some(()),
    )
    .await;
}

/// Waits until the fake provider's `/stats` counter `key` reads `n`.
async fn fake_stat_reaches(fake: &Fake, key: &str, n: u64, what: &str) {
    wait_until_async(&format!("{n} {what}"), Duration::from_secs(10), || {
        (fake.stats()[key].as_u64()? == n).then_some(())
    })
    .await;
}

/// Waits until the fake provider has `n` requests in flight.
pub async fn at_provider(fake: &Fake, n: u64) {
    fake_stat_reaches(fake, "in_flight", n, "request(s) at the provider").await;
}

/// Waits until the fake provider has seen `n` aborted requests.
pub async fn provider_aborted(fake: &Fake, n: u64) {
    fake_stat_reaches(fake, "aborted", n, "abort(s) at the provider").await;
}

/// `exai ARGS` with only `env` (and PATH), `stdin` written to it; what it printed and how it ended.
pub fn exai_output(env: &[(&str, &str)], args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(EXAI)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses before reading its input closes the pipe: not the test's concern.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

/// A fresh EXAI_HOME.
/// A file in a new temp dir holding the test CA's certificate, for `EXAI_PROVIDER_CA_FILE`.
pub fn trust_test_ca() -> PathBuf {
    let path = temp_home().join("test-ca.pem");
    std::fs::write(&path, exai_fake_provider::TEST_CA_PEM).unwrap();
    path
}

pub fn temp_home() -> PathBuf {
    let dir = run_dir().join(uuid::Uuid::now_v7().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The directory of this process's homes (`exai-test-run-PID` in the temp dir). Homes hold logs
/// and stores, megabytes each; a later run removes those of runs that have ended, so a failed
/// test's home stays to be looked at until then, and the temp dir does not fill up.
fn run_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let temp = std::env::temp_dir();
        remove_ended_runs(&temp);
        let dir = temp.join(format!("{RUN_DIR_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

const RUN_DIR_PREFIX: &str = "exai-test-run-";

/// Removes the homes of test runs whose process is gone, and the older one-directory-per-home
/// layout's (`exai-test-UUID`) once an hour old.
fn remove_ended_runs(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let ended = match name.strip_prefix(RUN_DIR_PREFIX) {
            Some(pid) => pid
                .parse::<u32>()
                .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()),
            None => {
                name.strip_prefix("exai-test-")
                    .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok())
                    && entry.metadata().and_then(|m| m.modified()).is_ok_and(|at| {
                        at.elapsed().unwrap_or_default() > Duration::from_secs(3600)
                    })
            }
        };
        if ended {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Waits until `daemon`'s store shows an open `chat` call, and returns its record (a call's
/// record is written as it starts, not waited for).
pub async fn running_chat(daemon: &Daemon) -> exai::store::CallRow {
    wait_until_async("a chat call running", Duration::from_secs(10), || {
        daemon
            .read_store(|store| {
                store.list(&exai::store::CallFilter {
                    running_only: true,
                    tool: Some("chat".into()),
                    limit: 10,
                    ..Default::default()
                })
            })
            .unwrap()
            .into_iter()
            .find(|row| row.state == exai::store::CallState::Running)
    })
    .await
}

/// A free loopback port (bound then released).
/// A loopback port where nothing listens for as long as the guard lives: the socket is bound but
/// never listens, so no other test (running in parallel) can take the port, and connecting to it is
/// refused. A port from [`free_port`] may be someone else's by the time it is dialled.
pub struct DeadPort {
    _socket: tokio::net::TcpSocket,
    pub port: u16,
}

pub fn dead_port() -> DeadPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    DeadPort {
        _socket: socket,
        port,
    }
}

/// The programs `names` that scripts/test installs from npm into `target/clients`, when all are
/// there. Missing, the test fails under CI and is skipped (said on stderr) elsewhere, so that
/// a plain `cargo test` without npm still runs.
pub fn installed_npm_bins<const N: usize>(names: [&str; N], what: &str) -> Option<[PathBuf; N]> {
    let bin = Path::new(EXAI)
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("clients/node_modules/.bin"))
        .unwrap_or_default();
    let found = names.map(|name| bin.join(name));
    if found.iter().all(|path| path.exists()) {
        return Some(found);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is not installed in {} (scripts/test installs it)",
        bin.display()
    );
    eprintln!(
        "skipped: {what} is not installed in {} (scripts/test installs it)",
        bin.display()
    );
    None
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Set to a PostgreSQL superuser's URL (`postgres://exai:PASSWORD@127.0.0.1:PORT/postgres`, what
/// `scripts/postgres.sh` writes), the suite runs on PostgreSQL: each EXAI_HOME gets a database there.
pub const TEST_DATABASE_URL: &str = "EXAI_TEST_DATABASE_URL";

/// The variable naming the store of a daemon or CLI.
pub const DATABASE_URL: &str = "EXAI_DATABASE_URL";

fn test_database_server() -> Option<String> {
    std::env::var(TEST_DATABASE_URL)
        .ok()
        .filter(|url| !url.is_empty())
}

/// Whether this run keeps every store in PostgreSQL.
pub fn on_postgres() -> bool {
    test_database_server().is_some()
}

/// For a test about the SQLite file itself: true (having said why) when the run is on PostgreSQL,
/// where the test must stop: `if sqlite_only("why") { return; }`.
pub fn sqlite_only(why: &str) -> bool {
    let skip = on_postgres();
    if skip {
        eprintln!("skipped on PostgreSQL, a test of the SQLite store: {why}");
    }
    skip
}

/// The store environment of a daemon or CLI whose EXAI_HOME is `home`: on PostgreSQL, the URL of
/// the home's own database (created on first use, the same for every daemon started there);
/// nothing on SQLite, where the store is `home/calls.sqlite3`.
pub fn store_env(home: &Path) -> Vec<(String, String)> {
    match test_database_server() {
        Some(server) => vec![(DATABASE_URL.to_string(), database_of(&server, home))],
        None => Vec::new(),
    }
}

/// Runs `work` on a thread of its own and returns what it returns (re-raising its panic). The
/// `postgres` crate blocks on a runtime of its own, which tokio refuses on a thread that drives an
/// async test: every use of a PostgreSQL client, `StoreReader`s included, goes through here.
pub fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(work)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The databases this process made (or found), so each is created once.
static DATABASES: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// The URL of `home`'s database on `server`, created when missing.
fn database_of(server: &str, home: &Path) -> String {
    let name = database_name(home);
    if !DATABASES.lock().unwrap().contains(&name) {
        off_runtime(|| create_database(server, &name));
        DATABASES.lock().unwrap().insert(name.clone());
    }
    let mut url = reqwest::Url::parse(server)
        .unwrap_or_else(|e| panic!("{TEST_DATABASE_URL} is not a URL: {e}"));
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// `exai_` and a digest of the home's path: a valid name of at most 63 bytes for any path.
pub fn database_name(home: &Path) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, home.as_os_str().as_encoded_bytes());
    let hex: String = digest.as_ref()[..12]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("exai_{hex}")
}

fn create_database(server: &str, name: &str) {
    // The errors below never carry the URL: it holds the password.
    let mut client = postgres::Client::connect(server, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to {TEST_DATABASE_URL}: {e}"));
    match client.batch_execute(&format!("CREATE DATABASE {name}")) {
        Ok(()) => {}
        // Another test thread, or an earlier run on the same server, made it.
        Err(e) if e.code() == Some(&postgres::error::SqlState::DUPLICATE_DATABASE) => {}
        Err(e) => panic!("cannot create database {name}: {e}"),
    }
}

/// Where the store of a daemon or CLI with environment `env` and EXAI_HOME `home` is.
fn store_location(env: &[(String, String)], home: &Path) -> StoreLocation {
    match env.iter().rev().find(|(key, _)| key == DATABASE_URL) {
        Some((_, url)) if !url.is_empty() => StoreLocation::Postgres(url.clone()),
        _ => StoreLocation::Sqlite(home.join("calls.sqlite3")),
    }
}

/// What `read` finds in the store a daemon or CLI started with EXAI_HOME `home` and
/// `store_env(home)` uses, read off the runtime.
pub fn read_store_of_home<T: Send>(home: &Path, read: impl FnOnce(&StoreReader) -> T + Send) -> T {
    let location = store_location(&store_env(home), home);
    off_runtime(|| read(&open_store(&location)))
}

fn open_store(location: &StoreLocation) -> StoreReader {
    StoreReader::open_at(location).unwrap_or_else(|e| panic!("cannot open the store: {e}"))
}

/// Every row of every table of the PostgreSQL database at `url`, as JSON text (call it off the
/// runtime).
fn every_row(url: &str) -> Vec<String> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to the daemon's database: {e}"));
    let tables = client
        .query(
            "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables \
             WHERE table_type = 'BASE TABLE' \
             AND table_schema NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .unwrap();
    let mut rows = Vec::new();
    for table in tables {
        let table: String = table.get(0);
        for row in client
            .query(&format!("SELECT row_to_json(t)::text FROM {table} t"), &[])
            .unwrap()
        {
            rows.push(row.get(0));
        }
    }
    rows
}

/// Environment for an `exai stdio` that may start its own daemon (EXAI_HOME `home`, the fake as provider).
pub fn autostart_env(home: &Path, fake: &Fake, exai_url: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("EXAI_HOME".to_string(), home.display().to_string()),
        ("CUSTOM_API_URL".to_string(), format!("{}/v1", fake.url)),
        ("CUSTOM_MODEL_NAME".to_string(), "fake-fast".to_string()),
    ];
    env.extend(store_env(home));
    if let Some(url) = exai_url {
        env.push(("EXAI_URL".to_string(), url.to_string()));
    }
    env
}

/// The `daemon.json` of the daemon running in `home`.
pub fn daemon_info(home: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(home.join("daemon.json")).unwrap()).unwrap()
}

/// Stops a daemon a shim started (it is detached: nobody else will) and waits until it is gone.
pub fn stop_started_daemon(home: &Path) {
    let pid = daemon_info(home)["pid"].as_u64().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Gone means exited, not only past removing daemon.json: its logs are flushed as it exits.
    let exited = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
    };
    wait_until("the daemon to stop", Duration::from_secs(10), || {
        (!home.join("daemon.json").exists() && exited()).then_some(())
    });
}

/// Every line of `home`'s logs (JSON logs and daemon.out).
pub fn log_lines(home: &Path) -> Vec<String> {
    std::fs::read_dir(home.join("logs"))
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default())
        .flat_map(|text| text.lines().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// How many times `needle` was logged in `home`'s logs.
pub fn logged(home: &Path, needle: &str) -> usize {
    log_lines(home)
        .iter()
        .map(|line| line.matches(needle).count())
        .sum()
}

/// A running `exai daemon`.
pub struct Daemon {
    pub home: PathBuf,
    pub addr: String,
    pub env: Vec<(String, String)>,
    pub proc: Option<Proc>,
}

impl Daemon {
    /// Starts a daemon on a random port with the fake provider as its endpoint.
    pub fn start(fake: &Fake, env: &[(&str, &str)]) -> Self {
        Self::start_in(temp_home(), "127.0.0.1:0", fake, env)
    }

    pub fn start_in(home: PathBuf, listen: &str, fake: &Fake, env: &[(&str, &str)]) -> Self {
        let store = store_env(&home);
        Self::start_with_store(home, listen, fake, store, env)
    }

    /// Starts `exai daemon ARGS` (which name the address to listen on) in `home`.
    pub fn start_with_args(
        home: PathBuf,
        args: &[&str],
        fake: &Fake,
        env: &[(&str, &str)],
    ) -> Self {
        let store = store_env(&home);
        Self::launch(home, args, fake, store, env)
    }

    /// Starts a daemon whose store is given by `store` (the environment naming it).
    fn start_with_store(
        home: PathBuf,
        listen: &str,
        fake: &Fake,
        store: Vec<(String, String)>,
        env: &[(&str, &str)],
    ) -> Self {
        Self::launch(home, &["--listen", listen], fake, store, env)
    }

    fn launch(
        home: PathBuf,
        args: &[&str],
        fake: &Fake,
        store: Vec<(String, String)>,
        env: &[(&str, &str)],
    ) -> Self {
        let mut all: Vec<(String, String)> = vec![
            ("EXAI_HOME".into(), home.display().to_string()),
            ("CUSTOM_API_URL".into(), format!("{}/v1", fake.url)),
            ("CUSTOM_MODEL_NAME".into(), "fake-fast".into()),
            ("EXAI_PROGRESS_INTERVAL_S".into(), "0.5".into()),
        ];
        all.extend(store);
        for (k, v) in env {
            all.retain(|(key, _)| key != k);
            all.push((k.to_string(), v.to_string()));
        }
        let _ = std::fs::remove_file(home.join("daemon.json"));
        let child = Command::new(EXAI)
            .arg("daemon")
            .args(args)
            .envs(all.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("EXAI_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start daemon");
        let info_path = home.join("daemon.json");
        let addr = wait_until("daemon.json", Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&info_path).ok()?;
            let info: Value = serde_json::from_str(&text).ok()?;
            Some(info["listen"].as_str()?.to_string())
        });
        Self {
            home,
            addr,
            env: all,
            proc: Some(Proc(child)),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.home.join("token"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn healthz(&self) -> Value {
        serde_json::from_str(&http_get(&format!("http://{}/healthz", self.addr))).unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().unwrap().0.id()
    }

    /// Sends a signal with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then waits (bounded) for the process to exit: its logs are flushed then.
    pub fn stop(&mut self) {
        self.signal("-TERM");
        wait_until("the daemon to exit", Duration::from_secs(15), || {
            self.proc.as_mut()?.0.try_wait().ok()?
        });
    }

    /// Runs `exai ARGS` (the CLI) with this daemon's environment: (success, stdout + stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let output = Command::new(EXAI)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run the exai CLI");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    /// Environment for an `exai stdio` relaying to this daemon over its socket in EXAI_HOME.
    pub fn stdio_env(&self) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.push(("EXAI_NO_AUTOSTART".into(), "1".into()));
        env
    }

    /// Environment for an `exai stdio` relaying to this daemon over TCP (`EXAI_URL`, challenge–response).
    pub fn tcp_stdio_env(&self, url: &str) -> Vec<(String, String)> {
        let mut env = self.stdio_env();
        env.push(("EXAI_URL".into(), url.into()));
        env
    }

    /// Where this daemon keeps its store.
    pub fn store_location(&self) -> StoreLocation {
        store_location(&self.env, &self.home)
    }

    /// This daemon's store, opened for reading. Not in an async test: see `read_store`.
    pub fn store(&self) -> StoreReader {
        open_store(&self.store_location())
    }

    /// What `read` finds in this daemon's store, read off the runtime (fit for async tests).
    pub fn read_store<T: Send>(&self, read: impl FnOnce(&StoreReader) -> T + Send) -> T {
        off_runtime(|| read(&self.store()))
    }

    /// Everything this daemon's store holds, as text, to search for what must never be kept: the
    /// SQLite files' bytes, or every row of the PostgreSQL database as JSON.
    pub fn store_contents(&self) -> Vec<String> {
        match self.store_location() {
            StoreLocation::Sqlite(file) => {
                let wal = PathBuf::from(format!("{}-wal", file.display()));
                [file, wal]
                    .iter()
                    .filter_map(|file| std::fs::read(file).ok())
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                    .collect()
            }
            StoreLocation::Postgres(url) => off_runtime(|| every_row(&url)),
        }
    }

    /// The record of a call, read from the store.
    pub fn record(&self, id: &str) -> Option<exai::store::CallRow> {
        self.read_store(|store| store.get(id).ok().flatten())
    }

    /// Waits until the call's record reaches a final state; returns it.
    pub fn final_record(&self, id: &str) -> exai::store::CallRow {
        wait_until(
            &format!("final record of {id}"),
            Duration::from_secs(20),
            || {
                self.record(id)
                    .filter(|r| !matches!(r.state.as_str(), "received" | "running"))
            },
        )
    }
}

/// Two daemons in two EXAI_HOMEs (each its own socket and token) sharing ONE database, both
/// with `env`: replicas A and B. `None` (having said why) unless the run is on PostgreSQL, the
/// store replicas share.
pub fn replicas(fake: &Fake, env: &[(&str, &str)]) -> Option<(Daemon, Daemon)> {
    let Some(server) = test_database_server() else {
        eprintln!("skipped: replicas share a PostgreSQL database; set {TEST_DATABASE_URL}");
        return None;
    };
    // The database is named after a directory of its own, like a home's.
    let store = vec![(DATABASE_URL.to_string(), database_of(&server, &temp_home()))];
    let start = || Daemon::start_with_store(temp_home(), "127.0.0.1:0", fake, store.clone(), env);
    Some((start(), start()))
}

/// Two replicas (see [`replicas`]) and an MCP client of each over its shim.
pub struct ReplicaPair {
    pub a: Daemon,
    pub b: Daemon,
    pub client_a: Client,
    pub client_b: Client,
}

/// [`replicas`] with a client of each; `None` unless the run is on PostgreSQL.
pub async fn replica_pair(fake: &Fake, env: &[(&str, &str)]) -> Option<ReplicaPair> {
    let (a, b) = replicas(fake, env)?;
    let (client_a, _) = stdio_client(&a.stdio_env(), &[]).await;
    let (client_b, _) = stdio_client(&b.stdio_env(), &[]).await;
    Some(ReplicaPair {
        a,
        b,
        client_a,
        client_b,
    })
}

/// What the test client saw.
#[derive(Clone, Default)]
pub struct Seen {
    pub progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl ClientHandler for Seen {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }

    fn get_info(&self) -> ClientConfig {
        let mut info = ClientConfig::default();
        info.client_info = Implementation::new("exai-tests", "1.0");
        info
    }
}

pub type Client = RunningService<RoleClient, Seen>;

/// `exai stdio` with exactly `env` (and PATH), as a child-process transport.
fn exai_stdio(env: &[(String, String)], args: &[&str]) -> TokioChildProcess {
    exai_stdio_with_stderr(env, args, Stdio::null()).0
}

/// `exai stdio` with `env`, its stderr going to `stderr` (a pipe's read end is returned).
pub fn exai_stdio_with_stderr(
    env: &[(String, String)],
    args: &[&str],
    stderr: Stdio,
) -> (TokioChildProcess, Option<tokio::process::ChildStderr>) {
    let mut command = tokio::process::Command::new(EXAI);
    command.arg("stdio").args(args).env_clear();
    command.env("PATH", std::env::var("PATH").unwrap_or_default());
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    TokioChildProcess::builder(command)
        .stderr(stderr)
        .spawn()
        .expect("spawn exai stdio")
}

/// An rmcp client with its own handler talking to `exai stdio` with `env`.
pub async fn stdio_client_with<H: ClientHandler>(
    env: &[(String, String)],
    handler: H,
) -> RunningService<RoleClient, H> {
    handler
        .serve(exai_stdio(env, &[]))
        .await
        .expect("initialize")
}

/// An rmcp client talking to `exai stdio` with `env`.
pub async fn stdio_client(env: &[(String, String)], args: &[&str]) -> (Client, Seen) {
    let seen = Seen::default();
    let client = seen
        .clone()
        .serve(exai_stdio(env, args))
        .await
        .expect("initialize");
    (client, seen)
}

/// Sends a tool call the test can cancel (`handle.cancel(reason)`).
pub async fn cancellable_call(
    client: &Client,
    params: CallToolRequestParams,
) -> RequestHandle<RoleClient> {
    client
        .peer()
        .send_cancellable_request(
            ClientRequest::CallToolRequest(Request::new(params)),
            PeerRequestOptions::no_options(),
        )
        .await
        .expect("send a cancellable call")
}

pub fn chat(prompt: &str, model: &str) -> CallToolRequestParams {
    CallToolRequestParams::new("chat").with_arguments(
        json!({"prompt": prompt, "model": model})
            .as_object()
            .unwrap()
            .clone(),
    )
}

/// A chat in flight on its own task, as [`spawn_chats`] starts them.
pub type ChatInFlight = tokio::task::JoinHandle<Result<CallToolResult, rmcp::ServiceError>>;

/// `count` chats with `model` started at once through `client`, prompts `{prefix}{i}`.
pub fn spawn_chats(client: &Client, count: usize, prefix: &str, model: &str) -> Vec<ChatInFlight> {
    (0..count)
        .map(|i| {
            let (peer, request) = (client.peer().clone(), chat(&format!("{prefix}{i}"), model));
            #[allow(clippy::disallowed_methods)] // test tasks carry no call's span
            tokio::spawn(async move { peer.call_tool(request).await })
        })
        .collect()
}

/// A call of `tool` with `args` (a JSON object).
pub fn call(tool: &str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().unwrap().clone())
}

/// The step answer of a workflow tool (the JSON block every workflow answer starts with).
pub fn answer_of(result: &CallToolResult) -> Value {
    assert_eq!(result.is_error, Some(false), "{}", all_text_of(result));
    serde_json::from_str(&text_of(result)).expect("a JSON step answer")
}

/// The text of a result that must be an error.
pub fn error_of(result: &CallToolResult) -> String {
    assert_eq!(result.is_error, Some(true), "{}", all_text_of(result));
    all_text_of(result)
}

/// The last request body the fake provider received for `model`.
/// `chat` with these arguments.
pub fn chat_with(args: Value) -> CallToolRequestParams {
    call("chat", args)
}

/// A daemon whose four built-in providers (GLM, Kimi, OpenAI, OpenRouter) are all the fake,
/// each with a key, and no custom endpoint.
pub fn every_provider(fake: &Fake, extra: &[(&str, &str)]) -> Daemon {
    let url = format!("{}/v1", fake.url);
    let mut env: Vec<(&str, &str)> = vec![
        ("CUSTOM_API_URL", ""),
        ("GLM_API_KEY", "glm-test-key"),
        ("GLM_API_URL", &url),
        ("KIMI_API_KEY", "kimi-test-key"),
        ("KIMI_API_URL", &url),
        ("OPENAI_API_KEY", "openai-test-key"),
        ("OPENAI_BASE_URL", &url),
        ("OPENROUTER_API_KEY", "openrouter-test-key"),
        ("OPENROUTER_BASE_URL", &url),
    ];
    env.extend_from_slice(extra);
    Daemon::start(fake, &env)
}

/// The body the fake last received for `model`.
pub fn last_body(fake: &Fake, model: &str) -> Value {
    serde_json::from_str(&http_get(&format!(
        "{}/last_request?model={model}",
        fake.url
    )))
    .unwrap()
}

pub fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Runs `git -C dir <args>` (as the test's user), which must succeed.
pub fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

/// The first text block of a result: the answer itself (notes follow in later blocks).
pub fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .find_map(|c| c.as_text().map(|t| t.text.clone()))
        .unwrap_or_default()
}

/// Every text block of a result, joined.
pub fn all_text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn call_id_of(result: &CallToolResult) -> String {
    result
        .meta
        .as_ref()
        .and_then(|m| m.get("exai.dev/callId"))
        .and_then(Value::as_str)
        .expect("result carries its call id")
        .to_string()
}

pub fn home_of(daemon: &Daemon) -> &Path {
    &daemon.home
}

/// A raw JSON-RPC client over `exai stdio`: one message per line, every read bounded.
pub struct RawClient {
    child: Proc,
    lines: std::sync::mpsc::Receiver<String>,
    next_id: i64,
}

impl RawClient {
    pub fn start(env: &[(String, String)], args: &[&str]) -> Self {
        let mut child = Command::new(EXAI)
            .arg("stdio")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn exai stdio");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child: Proc(child),
            lines,
            next_id: 1,
        }
    }

    pub fn send(&mut self, message: &Value) {
        use std::io::Write;
        let stdin = self.child.0.stdin.as_mut().unwrap();
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    }

    /// Writes `lines` in one write, then closes the shim's input (as a client that goes does).
    pub fn send_and_close(&mut self, lines: &str) {
        use std::io::Write;
        let mut stdin = self.child.0.stdin.take().unwrap();
        stdin.write_all(lines.as_bytes()).unwrap();
    }

    /// Reads until the response to `id`, skipping notifications; fails after 30 s.
    pub fn response(&mut self, id: i64) -> Value {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no response to request {id}: {e}"));
            let message: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            if message["id"] == id && message.get("method").is_none() {
                return message;
            }
        }
    }

    /// Sends a request and returns the whole response (`result` or `error`).
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.response(id)
    }

    /// The `result` of a request that must succeed.
    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        let reply = self.request(method, params);
        assert!(reply.get("error").is_none(), "{method}: {reply}");
        reply["result"].clone()
    }

    /// The `error` of a request that must fail.
    pub fn err(&mut self, method: &str, params: Value) -> Value {
        let reply = self.request(method, params);
        assert!(reply.get("result").is_none(), "{method}: {reply}");
        reply["error"].clone()
    }
}

/// The resident memory of process `pid`, in bytes (`VmRSS` in `/proc/PID/status`, Linux).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    Some(proc_kb(&format!("/proc/{pid}/status"), "VmRSS")? * 1024)
}

/// A `NAME:  N kB` line's N in a /proc file (`/proc/<pid>/status`, `smaps_rollup`).
pub fn proc_kb(path: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// A PostgreSQL cluster of a test's or benchmark's own (scripts/postgres.sh), which it may stop
/// and start; removed when dropped.
pub struct Cluster {
    pub dir: PathBuf,
}

impl Cluster {
    /// A throwaway cluster; `durable` keeps PostgreSQL's own fsync and commit settings (for
    /// benchmarks) instead of the test cluster's fast ones.
    pub fn start(durable: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("exai-pg-{}", uuid::Uuid::now_v7()));
        postgres_script(&["start", &path(&dir)], durable);
        Self { dir }
    }

    /// Its URL (to the `postgres` database; a secret: it holds the password).
    pub fn url(&self) -> String {
        std::fs::read_to_string(self.dir.join("url"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn password(&self) -> String {
        let url = self.url();
        let (credentials, _) = url
            .trim_start_matches("postgres://")
            .split_once('@')
            .unwrap();
        credentials.split_once(':').unwrap().1.to_string()
    }

    /// Stops the server, keeping its data (a database outage).
    pub fn pause(&self) {
        postgres_script(&["pause", &path(&self.dir)], false);
    }

    /// Starts it again on the same port.
    pub fn resume(&self) {
        postgres_script(&["resume", &path(&self.dir)], false);
    }

    /// Stops its processes where they are: it accepts connections and never answers.
    pub fn freeze(&self) {
        postgres_script(&["freeze", &path(&self.dir)], false);
    }

    /// Lets them go on.
    pub fn thaw(&self) {
        postgres_script(&["thaw", &path(&self.dir)], false);
    }
}

/// A daemon on a PostgreSQL cluster of the test's own (which the test may stop or freeze), with
/// `env` besides, a stdio client, and one chat answered and recorded before anything happens to
/// the database; the chat's call id last.
pub async fn daemon_on_own_cluster(
    env: &[(&str, &str)],
) -> (Cluster, Fake, Daemon, Client, String) {
    let cluster = Cluster::start(false);
    let url = cluster.url();
    let fake = Fake::start();
    let mut all = vec![("EXAI_DATABASE_URL", url.as_str())];
    all.extend_from_slice(env);
    let daemon = Daemon::start(&fake, &all);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let before = client
        .call_tool(chat("before anything happens to the database", "fake-fast"))
        .await
        .unwrap();
    let before_id = call_id_of(&before);
    assert_eq!(daemon.final_record(&before_id).state.as_str(), "succeeded");
    (cluster, fake, daemon, client, before_id)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        postgres_script(&["stop", &path(&self.dir)], false);
    }
}

fn postgres_script(args: &[&str], durable: bool) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(root.join("scripts/postgres.sh"))
        .args(args)
        .env("POSTGRES_DURABLE", if durable { "1" } else { "0" })
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "scripts/postgres.sh {}", args[0]);
}

/// `scripts/nginx.sh`, which runs nginx in front of replicas (installing Debian's nginx when missing).
pub const NGINX_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/nginx.sh");

/// Whether an nginx binary is installed (on PATH or in /usr/sbin, where Debian puts it).
pub fn nginx_installed() -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .any(|dir| dir.join("nginx").is_file())
}

/// Runs `scripts/nginx.sh ARGS`: (success, stdout + stderr).
fn nginx_script(args: &[&str]) -> (bool, String) {
    let output = Command::new("bash")
        .arg(NGINX_SCRIPT)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/nginx.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A team's deployment: `n` exai daemons, each in its own home but on one PostgreSQL database and
/// with one token, behind nginx (`scripts/nginx.sh`) on a loopback port. Dropping it stops nginx
/// and the daemons.
pub struct Team {
    pub replicas: Vec<Daemon>,
    pub token: String,
    nginx_dir: PathBuf,
    port: u16,
}

impl Team {
    /// Starts the team, or says why not and returns None: it needs a PostgreSQL run
    /// (`EXAI_TEST_DATABASE_URL`) and nginx (`scripts/test` installs it).
    pub fn start(fake: &Fake, n: usize) -> Option<Self> {
        let Some(server) = test_database_server() else {
            eprintln!("skipped: replicas share a PostgreSQL store; set {TEST_DATABASE_URL}");
            return None;
        };
        if !nginx_installed() {
            eprintln!("skipped: no nginx (scripts/nginx.sh install, or scripts/test, installs it)");
            return None;
        }
        // The team's database is named after a directory of its own, like a home's.
        let team_dir = temp_home();
        let store = vec![(DATABASE_URL.to_string(), database_of(&server, &team_dir))];
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        // One at a time: each applies the migrations at start.
        let replicas: Vec<Daemon> = (0..n)
            .map(|_| {
                let home = temp_home();
                write_private(&home.join("token"), &token);
                Daemon::start_with_store(home, "127.0.0.1:0", fake, store.clone(), &[])
            })
            .collect();
        let ports: Vec<String> = replicas
            .iter()
            .map(|replica| replica.addr.rsplit_once(':').unwrap().1.to_string())
            .collect();
        let nginx_dir = team_dir.join("nginx");
        // A port free now may be taken before nginx binds it: try a few.
        for _ in 0..3 {
            let port = free_port();
            let port_text = port.to_string();
            let mut args = vec!["start", path_str(&nginx_dir), &port_text];
            args.extend(ports.iter().map(String::as_str));
            let (started, output) = nginx_script(&args);
            if started {
                return Some(Self {
                    replicas,
                    token,
                    nginx_dir,
                    port,
                });
            }
            eprintln!("nginx did not start on 127.0.0.1:{port}: {output}");
            nginx_script(&["stop", path_str(&nginx_dir)]);
        }
        panic!("nginx did not start in front of the replicas");
    }

    /// nginx's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// nginx's address: `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The team's Streamable HTTP endpoint, through nginx.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base_url())
    }

    /// A new MCP session through nginx.
    pub async fn session(&self) -> HttpSession {
        HttpSession::open(&self.mcp_url(), &self.token).await
    }

    /// Which replica (its index) ran call `id`: the one whose pid owns its record.
    pub fn replica_of_call(&self, id: &str) -> usize {
        let record = self.replicas[0]
            .record(id)
            .unwrap_or_else(|| panic!("no record of call {id}"));
        self.replicas
            .iter()
            .position(|replica| i64::from(replica.pid()) == record.owner_pid)
            .unwrap_or_else(|| panic!("call {id} owned by pid {}, no replica", record.owner_pid))
    }

    /// Kills replica `index` with SIGKILL and waits until it is gone.
    pub fn kill(&mut self, index: usize) {
        let proc = self.replicas[index].proc.as_mut().unwrap();
        proc.0.kill().unwrap();
        proc.0.wait().unwrap();
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        let (stopped, output) = nginx_script(&["stop", path_str(&self.nginx_dir)]);
        if !stopped {
            eprintln!("scripts/nginx.sh stop failed: {output}");
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// Writes `text` to a new file only its owner may read (mode 0600), as exai's token file is.
pub fn write_private(file: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(file)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap();
}

/// The protocol revision the minimal HTTP client speaks.
pub const HTTP_PROTOCOL_VERSION: &str = "2025-06-18";

/// One answer to a POST on `/mcp`.
pub struct HttpAnswer {
    pub status: u16,
    /// The `Mcp-Session-Id` header, when the server sent one.
    pub session: Option<String>,
    pub body: String,
    event_stream: bool,
}

impl HttpAnswer {
    /// The JSON-RPC messages in the body: one JSON document, or one per server-sent event.
    pub fn messages(&self) -> Vec<Value> {
        if !self.event_stream {
            return serde_json::from_str(&self.body).into_iter().collect();
        }
        self.body
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .filter_map(|data| serde_json::from_str(data.trim()).ok())
            .collect()
    }

    /// The response to request `id` (notifications before it skipped).
    pub fn response(&self, id: i64) -> Value {
        self.messages()
            .into_iter()
            .find(|message| message["id"] == id && message.get("method").is_none())
            .unwrap_or_else(|| panic!("no response to {id}: {} {}", self.status, self.body))
    }
}

/// The POST of one JSON-RPC message to a Streamable HTTP endpoint, as the MCP SDKs send it
/// (on `session`, when there is one), for a test that reads the answer itself.
pub fn mcp_request(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    session: Option<&str>,
    message: &Value,
) -> reqwest::RequestBuilder {
    let mut request = http
        .post(url)
        .timeout(Duration::from_secs(30))
        .bearer_auth(token)
        .header("Accept", "application/json, text/event-stream")
        .json(message);
    if let Some(session) = session {
        request = request
            .header("Mcp-Session-Id", session)
            .header("MCP-Protocol-Version", HTTP_PROTOCOL_VERSION);
    }
    request
}

/// POSTs one JSON-RPC message to a Streamable HTTP endpoint, as the MCP SDKs do.
pub async fn mcp_post(
    url: &str,
    token: &str,
    session: Option<&str>,
    message: &Value,
) -> HttpAnswer {
    mcp_post_on(&reqwest::Client::new(), url, token, session, message).await
}

/// [`mcp_post`] on `http`'s connections (a session keeps its own, alive between requests).
pub async fn mcp_post_on(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    session: Option<&str>,
    message: &Value,
) -> HttpAnswer {
    let response = mcp_request(http, url, token, session, message)
        .send()
        .await
        .expect("POST /mcp");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    let session = header("mcp-session-id");
    let event_stream = header("content-type").is_some_and(|t| t.starts_with("text/event-stream"));
    HttpAnswer {
        status: response.status().as_u16(),
        session,
        event_stream,
        body: response.text().await.expect("the answer's body"),
    }
}

/// The `initialize` request (id 0) an HTTP client named `client_name` opens a session with.
pub fn http_initialize(client_name: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": HTTP_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": client_name, "version": "1.0"},
        },
    })
}

/// The environment of an `exai stdio --no-daemon` in `home` on `fake`, with `extra` settings.
pub fn in_process_env(fake: &Fake, home: &Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = autostart_env(home, fake, None);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// A minimal Streamable HTTP MCP client's session: `initialize` and `notifications/initialized`,
/// then requests carrying the session id the server gave.
pub struct HttpSession {
    url: String,
    token: String,
    pub id: String,
    next_id: i64,
    http: reqwest::Client,
}

impl HttpSession {
    pub async fn open(url: &str, token: &str) -> Self {
        let initialize = http_initialize("exai-http-tests");
        let http = reqwest::Client::new();
        let answer = mcp_post_on(&http, url, token, None, &initialize).await;
        assert_eq!(answer.status, 200, "initialize: {}", answer.body);
        assert!(
            answer.response(0).get("result").is_some(),
            "{}",
            answer.body
        );
        let id = answer
            .session
            .clone()
            .expect("initialize gave a session id");
        let session = Self {
            url: url.to_string(),
            token: token.to_string(),
            id,
            next_id: 1,
            http,
        };
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let answer = session.post(&initialized).await;
        assert_eq!(
            answer.status, 202,
            "notifications/initialized: {}",
            answer.body
        );
        session
    }

    /// POSTs `message` on this session.
    pub async fn post(&self, message: &Value) -> HttpAnswer {
        mcp_post_on(&self.http, &self.url, &self.token, Some(&self.id), message).await
    }

    /// Sends a request and returns the whole JSON-RPC response (`result` or `error`).
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let answer = self.post(&message).await;
        assert_eq!(answer.status, 200, "{method}: {}", answer.body);
        answer.response(id)
    }

    /// `chat` on `fake-fast` with `prompt`: the answer's text.
    pub async fn chat_text(&mut self, prompt: &str) -> String {
        let arguments = json!({"prompt": prompt, "model": "fake-fast"});
        text_in(&self.call_tool("chat", arguments).await)
    }

    /// The result of a `tools/call` that must not fail at the JSON-RPC level.
    pub async fn call_tool(&mut self, name: &str, arguments: Value) -> Value {
        let reply = self
            .request("tools/call", json!({"name": name, "arguments": arguments}))
            .await;
        assert!(reply.get("error").is_none(), "{name}: {reply}");
        reply["result"].clone()
    }
}

/// The token `exai users add` printed (the one line that is a token).
pub fn personal_token_in(output: &str) -> String {
    let tokens: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("exai_u_"))
        .collect();
    assert_eq!(tokens.len(), 1, "one token, printed once: {output}");
    tokens[0].to_string()
}

/// The call id in a raw `tools/call` result's `_meta`.
pub fn call_id_in(result: &Value) -> String {
    result["_meta"]["exai.dev/callId"]
        .as_str()
        .unwrap_or_else(|| panic!("no call id in {result}"))
        .to_string()
}

/// The first text block of a raw `tools/call` result.
pub fn text_in(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `exai ARGS` with only `env` (and PATH), `stdin` piped in: (success, stdout + stderr).
pub fn exai_with_stdin(env: &[(&str, &str)], args: &[&str], stdin: &str) -> (bool, String) {
    let output = exai_output(env, args, stdin);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}
