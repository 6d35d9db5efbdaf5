//! The harness's PostgreSQL side, run only when EXAI_TEST_DATABASE_URL is set: each EXAI_HOME gets
//! a database of its own, the same one whenever it is asked for again (a daemon restarted there).
//! URLs hold the password, so no assertion here prints one.

use crate::common::*;

fn current_database(url: &str) -> String {
    let mut client = postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to a home's database: {e}"));
    client
        .query_one("SELECT current_database()", &[])
        .unwrap()
        .get(0)
}

fn url_of(env: &[(String, String)]) -> &str {
    assert_eq!(env.len(), 1, "one variable");
    assert_eq!(env[0].0, DATABASE_URL);
    &env[0].1
}

#[test]
fn each_home_gets_a_database_of_its_own_and_finds_it_again() {
    if !on_postgres() {
        eprintln!("skipped: {TEST_DATABASE_URL} is not set");
        return;
    }
    let home = temp_home();
    let other = temp_home();
    let first = store_env(&home);
    let url = url_of(&first);
    assert!(
        store_env(&home) == first,
        "the same home, the same database"
    );
    let elsewhere = store_env(&other);
    assert!(url_of(&elsewhere) != url, "another home, another database");
    assert_eq!(current_database(url), database_name(&home));
    assert_eq!(current_database(url_of(&elsewhere)), database_name(&other));
}

#[test]
fn a_database_left_by_an_earlier_run_is_used() {
    if !on_postgres() {
        eprintln!("skipped: {TEST_DATABASE_URL} is not set");
        return;
    }
    let home = temp_home();
    let server = std::env::var(TEST_DATABASE_URL).unwrap();
    let mut admin = postgres::Client::connect(&server, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to {TEST_DATABASE_URL}: {e}"));
    admin
        .batch_execute(&format!("CREATE DATABASE {}", database_name(&home)))
        .unwrap();
    let env = store_env(&home);
    assert_eq!(current_database(url_of(&env)), database_name(&home));
}

#[test]
fn store_contents_reads_every_row_of_every_table() {
    if !on_postgres() {
        eprintln!("skipped: {TEST_DATABASE_URL} is not set");
        return;
    }
    let home = temp_home();
    let env = store_env(&home);
    let mut client = postgres::Client::connect(url_of(&env), postgres::NoTls).unwrap();
    client
        .batch_execute(
            "CREATE SCHEMA kept; CREATE TABLE kept.notes (body text); \
             INSERT INTO kept.notes VALUES ('first note'), ('second note'); \
             CREATE TABLE calls (id text, arguments text); \
             INSERT INTO calls VALUES ('c1', 'a call''s arguments');",
        )
        .unwrap();
    // A daemon that is not running: only its home and environment are read.
    let daemon = Daemon {
        home,
        addr: String::new(),
        env,
        proc: None,
    };
    let contents = daemon.store_contents().join("\n");
    for expected in ["first note", "second note", "a call's arguments"] {
        assert!(
            contents.contains(expected),
            "{expected} missing: {contents}"
        );
    }
}

#[test]
fn the_database_password_is_never_shown_or_logged() {
    if !on_postgres() {
        eprintln!("skipped: {TEST_DATABASE_URL} is not set");
        return;
    }
    let fake = Fake::start();
    let mut daemon = Daemon::start(&fake, &[("EXAI_LOG", "debug")]);
    let url = daemon
        .env
        .iter()
        .find(|(key, _)| key == DATABASE_URL)
        .unwrap()
        .1
        .clone();
    let password = reqwest::Url::parse(&url)
        .unwrap()
        .password()
        .unwrap()
        .to_string();
    let mut shown = vec![http_get(&format!("http://{}/healthz", daemon.addr))];
    for args in [
        &["config"][..],
        &["config", "--json"],
        &["status"],
        &["calls"],
    ] {
        let (ok, output) = daemon.cli(args);
        assert!(ok, "exai {args:?} failed");
        shown.push(output);
    }
    daemon.stop();
    for entry in std::fs::read_dir(daemon.home.join("logs")).unwrap() {
        shown.push(std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default());
    }
    // Not printed on failure: the text holds the password.
    assert!(
        !shown.iter().any(|text| text.contains(&password)),
        "the database password was shown or logged"
    );
}
