//! What calls cost, through the real binary: prices from a models file and the fake provider's
//! scripted usage (`fake-usage-<in>x<out>c<cached>`) give each record its cost to the
//! micro-dollar; `exai usage` sums them; a model without a price shows "unknown"; consensus and
//! workflow answers say what they cost; a spent daily budget refuses a call before any request.

use std::path::Path;

use serde_json::{Value, json};

use crate::common::*;

/// 800 fresh × $1.40 + 200 cached × $0.26 + 500 out × $4.40 per million: $0.003372.
const SMALL: &str = "fake-usage-1000x500c200";
const SMALL_MICROS: i64 = 3372;
/// 222,222 fresh × $0.60 + 111,111 cached × $0.11 + 77,777 out × $2.20 per million:
/// 316,664.81 µ$, kept as 316,665.
const LARGE: &str = "fake-usage-333333x77777c111111";
const LARGE_MICROS: i64 = 316_665;
/// A model the models file names without a price.
const UNPRICED: &str = "fake-usage-10x5";

/// A models file pricing the two scripted models on the custom endpoint (the fake). The large
/// one states a window and output limit that allow the 77,777 output tokens the fake reports:
/// more than the limit asked for would be counted as that limit.
fn models_file(home: &Path) -> String {
    let file = home.join("models.toml");
    std::fs::create_dir_all(home).unwrap();
    std::fs::write(
        &file,
        format!(
            "[[model]]\nid = \"{SMALL}\"\nprovider = \"custom\"\n\
             price = {{ input = 1.40, cached_input = 0.26, output = 4.40, checked = \"2026-12-02\" }}\n\n\
             [[model]]\nid = \"{LARGE}\"\nprovider = \"custom\"\ncontext_window = 200000\nmax_output = 100000\n\
             price = {{ input = 0.6, cached_input = 0.11, output = 2.2 }}\n\n\
             [[model]]\nid = \"{UNPRICED}\"\nprovider = \"custom\"\n\n\
             [[model]]\nid = \"fake-stall-3\"\nprovider = \"custom\"\n\
             price = {{ input = 1, output = 1 }}\n\n\
             [[model]]\nid = \"fake-resetmid-3\"\nprovider = \"custom\"\n\
             price = {{ input = 1, output = 1 }}\n"
        ),
    )
    .unwrap();
    path(&file)
}

/// A daemon pricing the fake's models (`models_file`), with `env` besides.
fn priced_daemon(fake: &Fake, env: &[(&str, &str)]) -> Daemon {
    let home = temp_home();
    let models = models_file(&home);
    let mut all = vec![("EXAI_MODELS_FILE", models.as_str())];
    all.extend_from_slice(env);
    Daemon::start_in(home, "127.0.0.1:0", fake, &all)
}

/// A consensus of the two priced models (and their synthesis).
async fn tabs_or_spaces(client: &Client) -> rmcp::model::CallToolResult {
    client
        .call_tool(call(
            "consensus",
            json!({"step": "Tabs or spaces?", "models": [SMALL, LARGE]}),
        ))
        .await
        .unwrap()
}

fn requests(fake: &Fake) -> u64 {
    fake.stats()["requests"].as_u64().unwrap()
}

#[tokio::test]
async fn each_call_is_priced_to_the_micro_dollar_and_usage_adds_them_up() {
    let fake = Fake::start();
    let daemon = priced_daemon(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let mut ids = Vec::new();
    for model in [SMALL, SMALL, SMALL, LARGE, UNPRICED] {
        let result = client
            .call_tool(chat("what does it cost?", model))
            .await
            .unwrap();
        assert_eq!(result.is_error, Some(false), "{}", all_text_of(&result));
        ids.push(call_id_of(&result));
    }
    let records: Vec<_> = ids.iter().map(|id| daemon.final_record(id)).collect();
    assert_eq!(records[0].cost_usd_micros, Some(SMALL_MICROS));
    assert_eq!(
        (
            records[0].tokens_in,
            records[0].tokens_out,
            records[0].cached_tokens
        ),
        (Some(1000), Some(500), Some(200))
    );
    assert_eq!(records[3].cost_usd_micros, Some(LARGE_MICROS));
    assert_eq!(records[4].cost_usd_micros, None, "a model without a price");

    let (ok, shown) = daemon.cli(&["calls", "show", &ids[0]]);
    assert!(ok, "{shown}");
    assert!(shown.contains("cost           $0.003372"), "{shown}");
    let (_, unpriced) = daemon.cli(&["calls", "show", &ids[4]]);
    assert!(
        unpriced.contains(&format!("cost           unknown ({UNPRICED} has no price")),
        "{unpriced}"
    );

    let total = 3 * SMALL_MICROS + LARGE_MICROS;
    let (ok, text) = daemon.cli(&["usage", "--json"]);
    assert!(ok, "{text}");
    let usage: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(usage["total"]["calls"], 5, "{usage}");
    assert_eq!(usage["total"]["cost_usd_micros"], total, "{usage}");
    assert_eq!(usage["total"]["unpriced_calls"], 1);
    assert_eq!(usage["total"]["tokens_in"], 3 * 1000 + 333_333 + 10);
    assert_eq!(usage["total"]["cached_tokens"], 3 * 200 + 111_111);
    assert_eq!(usage["total"]["tokens_out"], 3 * 500 + 77_777 + 5);
    assert_eq!(usage["today_usd_micros"], total);
    // The same cost reaches Prometheus and the live page's figures.
    let scraped = crate::metrics::scrape(&daemon);
    let counted = crate::metrics::total(&scraped, "exai_cost_usd_total", &[("tool", "chat")]);
    assert!((counted - total as f64 / 1e6).abs() < 1e-9, "{counted}");
    let bearer = format!("Bearer {}", daemon.token());
    let (status, stats) = http_request(
        "GET",
        &format!("http://{}/api/stats", daemon.addr),
        &[("Authorization", bearer.as_str())],
        "",
    );
    assert_eq!(status, 200, "{stats}");
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["spent_today_usd_micros"], total, "{stats}");
    let small = by_key(&usage["by_model"], SMALL);
    assert_eq!(
        (small["calls"].as_i64(), small["cost_usd_micros"].as_i64()),
        (Some(3), Some(3 * SMALL_MICROS))
    );
    assert_eq!(by_key(&usage["by_tool"], "chat")["cost_usd_micros"], total);
    assert_eq!(usage["by_day"].as_array().unwrap().len(), 1);
    let client_name = records[0].client_name.clone().unwrap();
    assert_eq!(by_key(&usage["by_client"], &client_name)["calls"], 5);

    let (ok, table) = daemon.cli(&["usage", "--since", "1d"]);
    assert!(ok, "{table}");
    assert!(table.contains("5 call(s) · $0.326781"), "{table}");
    assert!(table.contains("1 call(s) cost unknown"), "{table}");
    let (ok, by_model) = daemon.cli(&["usage", "--by", "model"]);
    assert!(
        ok && by_model.contains("MODEL") && !by_model.contains("TOOL"),
        "{by_model}"
    );
    let (ok, wrong) = daemon.cli(&["usage", "--since", "last week"]);
    assert!(!ok && wrong.contains("expected days (7d)"), "{wrong}");

    // Today's spend, in `exai status` and the status tool.
    let (_, status) = daemon.cli(&["status"]);
    assert!(status.contains("spent today (UTC): $0.326781"), "{status}");
    let status = client.call_tool(call("status", json!({}))).await.unwrap();
    let structured = status.structured_content.clone().unwrap();
    assert_eq!(structured["spent_today_usd_micros"], total, "{structured}");
    assert_eq!(structured["unpriced_calls_today"], 1);
    assert!(all_text_of(&status).contains("spent today (UTC): $0.326781"));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_call_stopped_while_its_model_streamed_costs_unknown_not_zero() {
    let fake = Fake::start();
    let daemon = priced_daemon(&fake, &[("EXAI_TOOL_TIMEOUTS", "chat=1")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    // Three tokens, then silence: the deadline stops it with no usage reported.
    let result = client
        .call_tool(chat("stall", "fake-stall-3"))
        .await
        .unwrap();
    let record = daemon.final_record(&call_id_of(&result));
    assert_eq!(
        record.state.as_str(),
        "timed_out",
        "{}",
        all_text_of(&result)
    );
    assert_eq!(record.cost_usd_micros, None);
    let (_, shown) = daemon.cli(&["calls", "show", &record.id]);
    assert!(shown.contains("cost           unknown"), "{shown}");
    // A provider that streams, then drops the connection, billed what it streamed and said
    // nothing of it: unknown too, not $0.
    let dropped = client
        .call_tool(chat("drop", "fake-resetmid-3"))
        .await
        .unwrap();
    let record = daemon.final_record(&call_id_of(&dropped));
    assert_eq!(record.state.as_str(), "failed", "{}", all_text_of(&dropped));
    assert_eq!(record.cost_usd_micros, None, "{record:?}");
    client.cancel().await.unwrap();
}

/// The row of a `by_*` list with this key.
fn by_key<'a>(rows: &'a Value, key: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no {key} in {rows}"))
}

#[tokio::test]
async fn consensus_and_workflow_answers_say_what_they_cost() {
    let fake = Fake::start();
    let daemon = priced_daemon(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let result = tabs_or_spaces(&client).await;
    let summary = answer_of(&result);
    // Two evaluations and the synthesis, written by the first model that answered.
    let total = 2 * SMALL_MICROS + LARGE_MICROS;
    assert_eq!(summary["cost_usd"], json!(total as f64 / 1e6), "{summary}");
    let text = all_text_of(&result);
    assert!(text.contains("Cost of this consensus: $0.323409"), "{text}");
    let record = daemon.final_record(&call_id_of(&result));
    assert_eq!(record.cost_usd_micros, Some(total));

    let step = client
        .call_tool(call(
            "thinkdeep",
            json!({
                "step": "Should we shard?", "step_number": 1, "total_steps": 1,
                "next_step_required": false, "findings": "one table is hot",
                "model": SMALL,
            }),
        ))
        .await
        .unwrap();
    let answer = answer_of(&step);
    assert_eq!(answer["cost_usd"], json!(0.003372), "{answer}");
    assert!(all_text_of(&step).contains("Cost of this step: $0.003372"));

    let unpriced = client
        .call_tool(call(
            "consensus",
            json!({"step": "Tabs?", "models": [SMALL, UNPRICED], "synthesize": false}),
        ))
        .await
        .unwrap();
    assert_eq!(answer_of(&unpriced)["cost_usd"], Value::Null);
    assert!(
        all_text_of(&unpriced)
            .contains("Cost of this consensus: unknown (custom: a model without a price)"),
        "{}",
        all_text_of(&unpriced)
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_call_past_a_daily_budget_is_refused_before_any_provider_request() {
    let fake = Fake::start();
    let home = temp_home();
    let models = models_file(&home);
    // Budgets from the config file: $1 overall, $0.003 for the custom endpoint (the fake).
    let config = home.join("config.toml");
    std::fs::write(
        &config,
        "daily_budget_usd = 1.0\n\n[provider_daily_budget_usd]\ncustom = 0.003\n",
    )
    .unwrap();
    let daemon = Daemon::start_in(
        home,
        "127.0.0.1:0",
        &fake,
        &[
            ("EXAI_MODELS_FILE", &models),
            ("EXAI_CONFIG", &path(&config)),
        ],
    );
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    // Below the budget when it starts: it runs, and goes past it.
    let first = client.call_tool(chat("one", SMALL)).await.unwrap();
    assert_eq!(first.is_error, Some(false), "{}", all_text_of(&first));
    let asked = requests(&fake);

    let refused = client.call_tool(chat("two", SMALL)).await.unwrap();
    let message = error_of(&refused);
    assert!(
        message
            .contains("custom's daily budget of $0.003000 is spent: $0.003372 spent today (UTC)"),
        "{message}"
    );
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d 00:00 UTC")
        .to_string();
    assert!(
        message.contains(&format!("it resets at {tomorrow}")),
        "{message}"
    );
    assert!(
        message.contains("EXAI_PROVIDER_DAILY_BUDGET_USD"),
        "{message}"
    );
    assert_eq!(requests(&fake), asked, "no request reached the provider");
    let record = daemon.final_record(&call_id_of(&refused));
    assert_eq!(record.error_kind.as_deref(), Some("budget_exceeded"));
    assert_eq!(record.cost_usd_micros, Some(0));

    let (_, status) = daemon.cli(&["status"]);
    assert!(
        status.contains(
            "spent today (UTC): $0.003372 of a $1.000000 daily budget (custom: $0.003000)"
        ),
        "{status}"
    );
    let (_, config) = daemon.cli(&["config"]);
    assert!(
        config.contains("EXAI_PROVIDER_DAILY_BUDGET_USD"),
        "{config}"
    );
    assert!(config.contains("custom=$0.003000"), "{config}");
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_person_keeps_to_their_own_daily_budget() {
    let fake = Fake::start();
    let home = temp_home();
    let models = models_file(&home);
    // Ada may spend $0.003 a day, everyone else $1; the owner's token has no personal budget.
    let daemon = Daemon::start_in(
        home.clone(),
        "127.0.0.1:0",
        &fake,
        &[
            ("EXAI_MODELS_FILE", &models),
            ("EXAI_USER_DAILY_BUDGET_USD", "ada=0.003,*=1"),
        ],
    );
    let ada = crate::users::add_user(&home, "ada", false);
    let bob = crate::users::add_user(&home, "bob", false);
    let mut as_ada = crate::users::WsClient::connect(&daemon, &ada).await;
    let mut as_bob = crate::users::WsClient::connect(&daemon, &bob).await;
    let ask = |prompt: &str| json!({"prompt": prompt, "model": SMALL});

    // Below her budget when it starts: it runs, and goes past it.
    let first = as_ada.chat(ask("one")).await;
    assert_ne!(first["isError"], true, "{first}");
    let asked = requests(&fake);
    let refused = as_ada.chat(ask("two")).await;
    assert_eq!(refused["isError"], true, "{refused}");
    let message = refused["content"][0]["text"].as_str().unwrap_or_default();
    assert!(
        message.contains("ada's daily budget of $0.003000 is spent: $0.003372 spent today (UTC)")
            && message.contains("EXAI_USER_DAILY_BUDGET_USD"),
        "{message}"
    );
    assert_eq!(requests(&fake), asked, "no request reached the provider");
    let record = daemon.final_record(&crate::users::call_id(&refused));
    assert_eq!(record.error_kind.as_deref(), Some("budget_exceeded"));
    assert_eq!(record.user_name.as_deref(), Some("ada"));

    // Bob's own budget is untouched by Ada's spend, and so is the owner's.
    let bobs = as_bob.chat(ask("three")).await;
    assert_ne!(bobs["isError"], true, "{bobs}");
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let owners = client.call_tool(chat("four", SMALL)).await.unwrap();
    assert_eq!(owners.is_error, Some(false), "{}", all_text_of(&owners));
}

/// A call's own spend counts against a budget before the call ends: consensus's synthesis, asked
/// once its models have spent the budget, is refused (before, the day's stored totals only
/// had the call's spend once it ended, so each request of one call passed).
#[tokio::test]
async fn a_calls_own_spend_counts_against_the_budget_before_it_ends() {
    let fake = Fake::start();
    let daemon = priced_daemon(&fake, &[("EXAI_PROVIDER_DAILY_BUDGET_USD", "custom=0.003")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let result = tabs_or_spaces(&client).await;
    let text = all_text_of(&result);
    // The models are asked at once: both may start within the budget, or the second be refused
    // once the first has spent it (the check reads the store, which may take a moment). The
    // synthesis, asked after both, never is.
    let asked = requests(&fake);
    assert!(asked == 1 || asked == 2, "{asked} requests: {text}");
    assert!(
        text.contains("custom's daily budget of $0.003000 is spent"),
        "{text}"
    );
    let record = daemon.final_record(&call_id_of(&result));
    let possible = if asked == 2 {
        vec![SMALL_MICROS + LARGE_MICROS]
    } else {
        vec![SMALL_MICROS, LARGE_MICROS]
    };
    assert!(
        record
            .cost_usd_micros
            .is_some_and(|c| possible.contains(&c)),
        "{record:?}"
    );
    client.cancel().await.unwrap();
}
