//! A provider's concurrency limit kept by every replica on one Postgres store together
//! (`EXAI_SHARED_CONCURRENCY`), and given back by a replica that dies.

use std::time::Duration;

use crate::common::*;

fn in_flight(fake: &Fake) -> u64 {
    fake.stats()["in_flight"].as_u64().unwrap()
}

#[tokio::test]
async fn replicas_on_one_store_never_exceed_the_shared_limit_together() {
    let fake = Fake::start();
    // B stays up (its daemon is stopped when dropped) while its client's calls run.
    let Some(ReplicaPair {
        a,
        b: _b,
        client_a,
        client_b,
    }) = replica_pair(&fake, &[("EXAI_SHARED_CONCURRENCY", "custom=2")]).await
    else {
        return;
    };
    let calls = (0..6).map(|i| {
        let peer = if i % 2 == 0 {
            client_a.peer().clone()
        } else {
            client_b.peer().clone()
        };
        async move {
            peer.call_tool(chat(&format!("q{i}"), "fake-delay-800"))
                .await
        }
    });
    let all = tokio::spawn(futures::future::join_all(calls));
    // Both slots in use, and a call on each replica says what it waits for.
    wait_until_async(
        "two requests at the provider",
        Duration::from_secs(10),
        || (in_flight(&fake) == 2).then_some(()),
    )
    .await;
    let queued = "queued for custom (all 2 of its slots shared by the replicas in use)";
    wait_until_async(
        "a call queued for a shared slot",
        Duration::from_secs(10),
        || {
            let (_, listing) = a.cli(&["calls", "--running", "--json"]);
            listing.contains(queued).then_some(())
        },
    )
    .await;
    let results = all.await.unwrap();
    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(text_of(&result.unwrap()), format!("echo: q{i}"));
    }
    assert_eq!(fake.stats()["max_in_flight"].as_u64(), Some(2));
    client_a.cancel().await.unwrap();
    client_b.cancel().await.unwrap();
}

#[tokio::test]
async fn a_replica_killed_while_holding_shared_slots_gives_them_back() {
    let fake = Fake::start();
    let Some(ReplicaPair {
        a,
        b,
        client_a,
        client_b,
    }) = replica_pair(&fake, &[("EXAI_SHARED_CONCURRENCY", "custom=2")]).await
    else {
        return;
    };
    // A takes both slots with calls that would hold them for a minute.
    for i in 0..2 {
        let peer = client_a.peer().clone();
        tokio::spawn(async move {
            let _ = peer
                .call_tool(chat(&format!("hold {i}"), "fake-delay-60000"))
                .await;
        });
    }
    wait_until_async("A holding both slots", Duration::from_secs(10), || {
        (in_flight(&fake) == 2).then_some(())
    })
    .await;
    let waiting = tokio::spawn({
        let peer = client_b.peer().clone();
        async move { peer.call_tool(chat("after A", "fake-fast")).await }
    });
    wait_until_async(
        "B's call queued for a slot",
        Duration::from_secs(10),
        || {
            let (_, listing) = b.cli(&["calls", "--running", "--json"]);
            listing.contains("queued for custom").then_some(())
        },
    )
    .await;
    a.signal("-KILL");
    // The dead replica's connection closes, Postgres releases its locks, B's call goes through.
    let answer = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("B's call got a slot after A died")
        .unwrap()
        .unwrap();
    assert_eq!(text_of(&answer), "echo: after A");
    client_b.cancel().await.unwrap();
    drop(client_a);
}

/// A database that stops answering bounds the wait for a shared slot: the call fails once the
/// database's own bound is hit, naming it, instead of waiting out its deadline as though every
/// slot were taken.
#[tokio::test]
async fn a_call_whose_shared_limit_s_database_hangs_fails_naming_the_database() {
    if !on_postgres() {
        eprintln!("skipped: a test of the PostgreSQL store (set EXAI_TEST_DATABASE_URL)");
        return;
    }
    let (cluster, _fake, _daemon, client, _) =
        daemon_on_own_cluster(&[("EXAI_SHARED_CONCURRENCY", "custom=2")]).await;

    cluster.freeze();
    let during = client
        .call_tool(chat("while the database hangs", "fake-fast"))
        .await
        .unwrap();
    let text = all_text_of(&during);
    assert_eq!(during.is_error, Some(true), "{text}");
    assert!(
        text.contains("custom's limit shared by the replicas cannot be checked")
            && text.contains("no answer from the database within"),
        "{text}"
    );
    assert!(!text.contains(&cluster.password()), "{text}");
    cluster.thaw();
    client.cancel().await.unwrap();
}
