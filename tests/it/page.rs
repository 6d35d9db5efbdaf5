//! The live page's doors: nothing without the daemon's token or a session cookie, a login code
//! that works once, no foreign `Origin` anywhere, a change with the cookie only from the page
//! itself, its Content-Security-Policy on every answer, a cancel through the page, and another
//! user's call as unknown as an id that never existed.

use crate::common;
use crate::users::{WsClient, add_user, call_id};
use std::time::Duration;

use common::*;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

/// Every page and data route (method, path), behind the token or the cookie.
const GUARDED: [(&str, &str); 8] = [
    ("GET", "/"),
    ("GET", "/assets/page.js"),
    ("GET", "/assets/page.css"),
    ("GET", "/api/calls"),
    ("GET", "/api/calls/01a00000-0000-7000-8000-000000000000"),
    ("GET", "/api/stats"),
    ("GET", "/api/events"),
    (
        "POST",
        "/api/calls/01a00000-0000-7000-8000-000000000000/cancel",
    ),
];

/// A client that follows no redirect and keeps no cookie: each request says all it carries.
/// The live page's event feed, opened with a session cookie.
async fn open_feed(daemon: &Daemon, cookie: &(&str, String)) -> reqwest::Response {
    let feed = http()
        .get(format!("http://{}/api/events", daemon.addr))
        .header(cookie.0, &cookie.1)
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), 200);
    feed
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// (status, headers) of `method path` with `headers`; a server-sent stream is not read.
async fn ask(
    daemon: &Daemon,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
) -> (u16, HeaderMap) {
    let mut request = http().request(
        method.parse().unwrap(),
        format!("http://{}{path}", daemon.addr),
    );
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let answer = request.send().await.unwrap();
    (answer.status().as_u16(), answer.headers().clone())
}

async fn json_of(daemon: &Daemon, path: &str, headers: &[(&str, String)]) -> (u16, Value) {
    let mut request = http().get(format!("http://{}{path}", daemon.addr));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let answer = request.send().await.unwrap();
    (
        answer.status().as_u16(),
        answer.json().await.unwrap_or(Value::Null),
    )
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

/// `exai open --print`'s link, and the session cookie it buys.
async fn log_in(daemon: &Daemon) -> (String, String) {
    let (ok, link) = daemon.cli(&["open", "--print"]);
    assert!(ok, "{link}");
    let link = link.trim().to_string();
    let path = link
        .strip_prefix(&format!("http://{}", daemon.addr))
        .unwrap_or_else(|| panic!("a link to this daemon: {link}"))
        .to_string();
    let (status, headers) = ask(daemon, "GET", &path, &[]).await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/");
    let cookie = headers["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    (path, session)
}

fn has_policy(headers: &HeaderMap) -> bool {
    headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|policy| {
            policy.contains("default-src 'self'") && policy.contains("script-src 'self'")
        })
}

#[test]
fn before_any_daemon_ran_open_and_reload_say_none_is_running() {
    let home = temp_home().join("never-started");
    let home = path(&home);
    let env = [("EXAI_HOME", home.as_str()), ("EXAI_NO_AUTOSTART", "1")];
    let (ok, out) = exai_with_stdin(&env, &["open", "--print"], "");
    assert!(
        !ok && out.contains("no exai daemon is running for this EXAI_HOME"),
        "{out}"
    );
    assert!(!out.contains("os error"), "{out}");
    let (ok, out) = exai_with_stdin(&env, &["reload"], "");
    assert!(ok && out.contains("no exai daemon is running"), "{out}");
}

#[tokio::test]
async fn without_the_token_or_a_session_every_page_route_is_refused() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    for (method, path) in GUARDED {
        let (status, headers) = ask(&daemon, method, path, &[]).await;
        assert_eq!(status, 401, "{method} {path}");
        assert!(has_policy(&headers), "{method} {path}: {headers:?}");
        let made_up = ("cookie", "exai_page=0123456789abcdef".to_string());
        assert_eq!(
            ask(&daemon, method, path, &[made_up]).await.0,
            401,
            "{method} {path}"
        );
    }
    // The daemon's token opens them, as it opens /mcp.
    let token = bearer(&daemon.token());
    let (status, headers) = ask(&daemon, "GET", "/", std::slice::from_ref(&token)).await;
    assert_eq!(status, 200);
    assert!(has_policy(&headers));
    assert_eq!(headers["x-frame-options"], HeaderValue::from_static("DENY"));
    let (status, calls) = json_of(&daemon, "/api/calls", &[token]).await;
    assert_eq!(status, 200);
    assert_eq!(calls["calls"], json!([]));
}

#[tokio::test]
async fn a_login_code_works_once_and_its_cookie_opens_the_page_and_its_feed() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (path, session) = log_in(&daemon).await;
    let again = ask(&daemon, "GET", &path, &[]).await;
    assert_eq!(again.0, 401, "a used code is refused");
    assert!(again.1.get("set-cookie").is_none());
    let made_up = ask(&daemon, "GET", "/login?code=feedface", &[]).await;
    assert_eq!(made_up.0, 401);
    let cookie = ("cookie", session);
    let (status, headers) = ask(&daemon, "GET", "/", std::slice::from_ref(&cookie)).await;
    assert_eq!(
        (status, headers["content-type"].to_str().unwrap()),
        (200, "text/html; charset=utf-8")
    );
    assert!(has_policy(&headers));

    // The feed starts with the calls in flight (none).
    let mut feed = open_feed(&daemon, &cookie).await;
    assert_eq!(feed.headers()["content-type"], "text/event-stream");
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), feed.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first);
    assert!(
        first.contains("event: snapshot") && first.contains("\"in_flight\":[]"),
        "{first}"
    );

    // A change with the cookie must say it comes from the page.
    let cancel = "/api/calls/01a00000-0000-7000-8000-000000000000/cancel";
    assert_eq!(
        ask(&daemon, "POST", cancel, std::slice::from_ref(&cookie))
            .await
            .0,
        403
    );
    let ours = ("origin", format!("http://{}", daemon.addr));
    assert_eq!(ask(&daemon, "POST", cancel, &[cookie, ours]).await.0, 404);
}

#[tokio::test]
async fn a_foreign_origin_is_refused_on_every_page_route() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (_, session) = log_in(&daemon).await;
    for origin in ["https://evil.example", "http://localhost:1", "null"] {
        for (method, path) in GUARDED {
            for with in [bearer(&daemon.token()), ("cookie", session.clone())] {
                let headers = [with, ("origin", origin.to_string())];
                let (status, _) = ask(&daemon, method, path, &headers).await;
                assert_eq!(status, 403, "{method} {path} from {origin}");
            }
        }
    }
}

#[tokio::test]
async fn a_call_is_cancelled_from_the_page_as_call_cancel_would() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let slow = tokio::spawn(async move {
        let answer = client.call_tool(chat("stop me", "fake-hang")).await;
        (client, answer)
    });
    calls_in_flight(&daemon, 1).await;
    let token = bearer(&daemon.token());
    // The record is committed within the store's linger (10 ms) of the call's start.
    let id = wait_for(
        "the running call listed",
        Duration::from_secs(10),
        async || {
            let running = "/api/calls?outcome=running";
            let (_, listed) = json_of(&daemon, running, std::slice::from_ref(&token)).await;
            listed["calls"][0]["id"].as_str().map(str::to_string)
        },
    )
    .await;
    let answer = http()
        .post(format!("http://{}/api/calls/{id}/cancel", daemon.addr))
        .header(token.0, &token.1)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let said: Value = answer.json().await.unwrap();
    assert_eq!(said["state"], "cancelled", "{said}");
    let (_, answered) = slow.await.unwrap();
    let text = format!("{answered:?}");
    assert!(text.contains("from the live page"), "{text}");
    let (status, record) = json_of(
        &daemon,
        &format!("/api/calls/{id}"),
        std::slice::from_ref(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(record["call"]["state"], "cancelled");
    assert!(
        record["call"]["arguments"]
            .as_str()
            .unwrap()
            .contains("stop me")
    );
    assert!(record["log"].as_array().unwrap().iter().any(|l| {
        l.as_str()
            .unwrap()
            .contains("cancel asked from the live page")
    }));
    let (_, cancelled) = json_of(
        &daemon,
        "/api/calls?outcome=cancelled&model=fake-hang&tool=chat",
        &[token],
    )
    .await;
    assert_eq!(cancelled["calls"][0]["id"], id.as_str());
}

#[tokio::test]
async fn another_users_call_is_not_found_and_not_listed() {
    let fake = Fake::start();
    let home = temp_home();
    let ann = add_user(&home, "ann", false);
    let bob = add_user(&home, "bob", false);
    let daemon = Daemon::start_in(home, "127.0.0.1:0", &fake, &[]);
    let mut anns = WsClient::connect(&daemon, &ann).await;
    let answer = anns
        .chat(json!({"prompt": "ann's own", "model": "fake-fast"}))
        .await;
    let id = call_id(&answer);
    let path = format!("/api/calls/{id}");
    assert_eq!(json_of(&daemon, &path, &[bearer(&bob)]).await.0, 404);
    let (_, bobs) = json_of(&daemon, "/api/calls", &[bearer(&bob)]).await;
    assert_eq!(bobs["calls"], json!([]));
    let cancel = format!("{path}/cancel");
    assert_eq!(ask(&daemon, "POST", &cancel, &[bearer(&bob)]).await.0, 404);
    let (status, record) = json_of(&daemon, &path, &[bearer(&ann)]).await;
    assert_eq!(
        (status, record["call"]["user_name"].as_str()),
        (200, Some("ann"))
    );
    // The owner's session sees everyone's.
    let (_, session) = log_in(&daemon).await;
    let (_, all) = json_of(&daemon, "/api/calls", &[("cookie", session)]).await;
    assert_eq!(all["calls"][0]["id"], id.as_str());
    let (_, stats) = json_of(&daemon, "/api/stats?window=day", &[bearer(&bob)]).await;
    assert_eq!(
        stats["figures"]["models"],
        json!([]),
        "bob's charts hold none of ann's calls"
    );
}

#[tokio::test]
async fn the_feed_carries_every_start_and_end_of_a_quick_run_of_calls() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let mut feed = http()
        .get(format!("http://{}/api/events", daemon.addr))
        .header("authorization", format!("Bearer {}", daemon.token()))
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), 200);
    let mut heard = String::new();
    // The snapshot first: the feed listens before the calls are made.
    read_feed_until(&mut feed, &mut heard, |text| {
        text.contains("event: snapshot")
    })
    .await;
    const CALLS: usize = 25;
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let mut ids = Vec::new();
    for i in 0..CALLS {
        let answer = client
            .call_tool(chat(&format!("quick {i}"), "fake-fast"))
            .await
            .unwrap();
        ids.push(call_id_of(&answer));
    }
    // Events close together share a write; none is lost.
    read_feed_until(&mut feed, &mut heard, |text| {
        text.matches("event: ended").count() >= CALLS
    })
    .await;
    assert_eq!(heard.matches("event: started").count(), CALLS, "{heard}");
    for id in &ids {
        // Started and ended (and maybe a progress sample between).
        assert!(heard.matches(id.as_str()).count() >= 2, "{id}: {heard}");
    }
    client.cancel().await.unwrap();
}

/// Reads the live feed into `heard` until `enough` says so (each chunk within 10 s).
async fn read_feed_until(
    feed: &mut reqwest::Response,
    heard: &mut String,
    enough: impl Fn(&str) -> bool,
) {
    while !enough(heard) {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), feed.chunk())
            .await
            .unwrap_or_else(|_| panic!("nothing more on the feed in 10 s; so far: {heard}"))
            .unwrap()
            .expect("the feed stays open");
        heard.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// A member's page login and open session were admitted with a token: once it is revoked, both
/// end within seconds, as a new request with it is refused.
#[tokio::test]
async fn a_revoked_members_page_login_and_open_session_end_within_seconds() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let token = add_user(&daemon.home, "ada", false);
    let mut session = WsClient::connect(&daemon, &token).await;
    let answer = session
        .chat(json!({"prompt": "hi", "model": "fake-fast"}))
        .await;
    assert_eq!(answer["isError"], false, "{answer}");
    let login = http()
        .post(format!("http://{}/api/login-code", daemon.addr))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let path = login.json::<Value>().await.unwrap()["path"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, headers) = ask(&daemon, "GET", &path, &[]).await;
    assert_eq!(status, 303);
    let cookie = headers["set-cookie"].to_str().unwrap();
    let cookie = ("cookie", cookie.split(';').next().unwrap().to_string());
    assert_eq!(
        ask(&daemon, "GET", "/api/calls", std::slice::from_ref(&cookie))
            .await
            .0,
        200
    );
    // Her live feed is open, and a call of hers runs.
    let mut feed = open_feed(&daemon, &cookie).await;
    assert!(
        feed.chunk().await.unwrap().is_some(),
        "the feed's first snapshot"
    );
    session
        .send(
            "tools/call",
            json!({"name": "chat", "arguments": {"prompt": "spend", "model": "fake-hang"}}),
        )
        .await;
    wait_until_async(
        "her call to reach the model",
        Duration::from_secs(10),
        || (fake.stats()["by_model"]["fake-hang"].as_u64() >= Some(1)).then_some(()),
    )
    .await;

    let (ok, revoked) = daemon.cli(&["users", "revoke", "ada"]);
    assert!(ok, "{revoked}");
    assert!(
        session
            .closed_within(std::time::Duration::from_secs(10))
            .await,
        "the revoked member's session stayed open"
    );
    let feed_ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = feed.chunk().await {}
    })
    .await;
    assert!(
        feed_ended.is_ok(),
        "the revoked member's live feed stayed open"
    );
    // Her call stops spending: it is cancelled, saying why.
    let record = wait_until_async("her call to end", Duration::from_secs(10), || {
        let rows = daemon.read_store(|store| {
            store
                .list(&exai::store::CallFilter {
                    limit: 10,
                    ..Default::default()
                })
                .unwrap_or_default()
        });
        rows.into_iter()
            .find(|row| row.arguments.contains("spend") && row.state.as_str() == "cancelled")
    })
    .await;
    assert!(
        record
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("personal token was revoked")),
        "{record:?}"
    );
    // By now the revocation is known (the session was ended for it): the login is refused.
    assert_eq!(
        ask(&daemon, "GET", "/api/calls", std::slice::from_ref(&cookie))
            .await
            .0,
        401
    );
}
