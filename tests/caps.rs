//! Caps hold exactly across nodes: two independent `Caps` (each with its own
//! connection pool, as two daemons would have) race 500 attempts at one
//! destination with a cap of 50 connected calls and 5 concurrent calls.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bidbridge::caps::{Caps, Refusal};
use bidbridge::catalog::Snapshot;
use bidbridge::catalog::spec::{CatalogDoc, DocFormat};
use bidbridge::money::Cents;
use common::TestDb;

const CATALOG: &str = r#"
[[publishers]]
id = "pub"
name = "Publisher"

[[campaigns]]
id = "c"
name = "C"
vertical = "v"

[[buyers]]
id = "b"
name = "B"
caps = { budget_per_day = "100.00" }

[[buyers.destinations]]
id = "d"
campaigns = ["c"]
static_price = "1.00"
dial = { sip = "sip:d@127.0.0.1" }
caps = { per_day = 50, concurrency = 5 }
"#;

fn destination() -> Arc<bidbridge::catalog::Destination> {
    let doc = CatalogDoc::parse(CATALOG, DocFormat::Toml).unwrap();
    let snapshot = Snapshot::build(&doc).unwrap();
    snapshot.campaigns["c"].destinations[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_never_pass_a_cap_of_50_or_5_at_once() {
    let db = TestDb::migrated().await;
    let nodes = [
        Caps::new(bidbridge::db::pool(&db.config).unwrap(), "node-a".into()),
        Caps::new(bidbridge::db::pool(&db.config).unwrap(), "node-b".into()),
    ];
    let destination = destination();
    let live = Arc::new(AtomicI64::new(0));
    let max_live = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for i in 0..500u32 {
        let caps = nodes[(i % 2) as usize].clone();
        let destination = destination.clone();
        let (live, max_live) = (live.clone(), max_live.clone());
        tasks.push(tokio::spawn(async move {
            // A caller refused for concurrency tries again shortly (the next
            // call to arrive); a full day cap refuses for good.
            loop {
                let call = uuid::Uuid::new_v4();
                match caps.admit(call, &destination, Cents(100)).await {
                    Ok(Some(reservation)) => {
                        let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                        max_live.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(2 + u64::from(i % 7))).await;
                        live.fetch_sub(1, Ordering::SeqCst);
                        caps.settle(reservation, true, Some(Cents(100))).await;
                        return Ok(true);
                    }
                    Ok(None) => panic!("the destination is capped"),
                    Err(Refusal::Full(cap)) if cap.contains("concurrent") => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(Refusal::Full(_)) => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
        }));
    }
    let mut connected = 0;
    for task in tasks {
        if task.await.unwrap().expect("database reachable") {
            connected += 1;
        }
    }
    assert_eq!(connected, 50, "exactly the cap of 50 calls connected");
    assert!(
        max_live.load(Ordering::SeqCst) <= 5,
        "{} live at once",
        max_live.load(Ordering::SeqCst)
    );
    assert!(
        max_live.load(Ordering::SeqCst) >= 2,
        "the race never overlapped; the test proves nothing"
    );

    let client = db.client().await;
    let rows = client
        .query(
            "SELECT owner_kind, metric, period, used, reserved FROM cap_counters ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .unwrap();
    let view: Vec<(String, String, String, i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert!(
        view.contains(&("destination".into(), "calls".into(), "day".into(), 50, 0)),
        "{view:?}"
    );
    assert!(
        view.contains(&("destination".into(), "live".into(), "now".into(), 0, 0)),
        "{view:?}"
    );
    assert!(
        view.contains(&("buyer".into(), "budget".into(), "day".into(), 5000, 0)),
        "{view:?}"
    );
    let held: i64 = client
        .query_one("SELECT count(*) FROM cap_reservations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 0, "every reservation settled");
}

#[tokio::test]
async fn the_snapshot_keeps_a_full_destination_out_of_the_auction() {
    use bidbridge::auction::eligibility::Gate;
    let db = TestDb::migrated().await;
    let caps = Caps::new(bidbridge::db::pool(&db.config).unwrap(), "node-a".into());
    let destination = destination();
    let now = chrono::Utc::now();
    assert_eq!(Gate::admit(caps.as_ref(), &destination, now), Ok(()));
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(
            caps.admit(uuid::Uuid::new_v4(), &destination, Cents(100))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    // Five live calls: concurrency is left to admission (exact); the gate
    // still lets the destination bid.
    assert_eq!(Gate::admit(caps.as_ref(), &destination, now), Ok(()));
    assert!(matches!(
        caps.admit(uuid::Uuid::new_v4(), &destination, Cents(100)).await,
        Err(Refusal::Full(f)) if f.contains("concurrent")
    ));
    // Answered calls use up the day cap: our own count at once, another
    // node's after it refreshes from the database.
    for reservation in held {
        caps.settle(reservation, true, Some(Cents(100))).await;
    }
    for _ in 0..45 {
        let r = caps
            .admit(uuid::Uuid::new_v4(), &destination, Cents(100))
            .await
            .unwrap()
            .unwrap();
        caps.settle(r, true, Some(Cents(100))).await;
    }
    assert_eq!(
        Gate::admit(caps.as_ref(), &destination, now),
        Err("destination call cap reached")
    );
    let other = Caps::new(bidbridge::db::pool(&db.config).unwrap(), "node-b".into());
    assert_eq!(
        Gate::admit(other.as_ref(), &destination, now),
        Ok(()),
        "before its first refresh"
    );
    other.refresh().await.unwrap();
    assert_eq!(
        Gate::admit(other.as_ref(), &destination, now),
        Err("destination call cap reached")
    );
}

#[tokio::test]
async fn a_dead_nodes_reservations_are_released_when_the_lease_runs_out() {
    let db = TestDb::migrated().await;
    let caps = Caps::new(bidbridge::db::pool(&db.config).unwrap(), "node-a".into());
    let destination = destination();
    for _ in 0..5 {
        // Held and never settled: the node "dies" here.
        let reservation = caps
            .admit(uuid::Uuid::new_v4(), &destination, Cents(100))
            .await
            .unwrap()
            .unwrap();
        std::mem::forget(reservation);
    }
    assert!(matches!(
        caps.admit(uuid::Uuid::new_v4(), &destination, Cents(100))
            .await,
        Err(Refusal::Full(_))
    ));
    let client = db.client().await;
    client
        .execute(
            "UPDATE cap_reservations SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let released: i32 = client
        .query_one("SELECT bidbridge_expire_reservations()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(released, 5);
    assert!(
        caps.admit(uuid::Uuid::new_v4(), &destination, Cents(100))
            .await
            .unwrap()
            .is_some()
    );
}

/// Two daemons on one database route 500 calls at one destination with a
/// cap of 50 connected calls and 5 at once: exactly 50 connected, the live
/// counter never above 5 (sampled throughout), the rest to the backup line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_route_500_calls_into_a_cap_of_50_and_5_at_once() {
    use bidbridge::simulate::scenario::Scenario;
    let db = TestDb::migrated().await;
    db.apply_catalog(
        r#"
[[publishers]]
id = "pub"
name = "P"

[[campaigns]]
id = "c"
name = "C"
vertical = "v"
min_talk_secs = 1
backup = { extension = "backup", context = "default" }

[[numbers]]
number = "+18005550100"
campaign = "c"
publisher = "pub"

[[buyers]]
id = "b"
name = "B"

[[buyers.destinations]]
id = "d"
campaigns = ["c"]
static_price = "1.00"
dial = { sip = "sip:capped@127.0.0.1" }
caps = { per_day = 50, concurrency = 5 }
"#,
    )
    .await;
    let (journal_a, journal_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut nodes = Vec::new();
    for (name, journal) in [("node-a", &journal_a), ("node-b", &journal_b)] {
        let mut config = common::test_config(&db, journal.path());
        config.node.id = name.into();
        let running = bidbridge::server::start(config).await.unwrap();
        let services = running.services.clone();
        assert!(
            common::eventually(Duration::from_secs(10), || async {
                services.catalog.is_loaded()
            })
            .await
        );
        nodes.push(running);
    }
    let scenario = Scenario::parse(
        "[run]\ncalls = 250\nrate_per_sec = 15.0\ntime_scale = 0.01\n\n\
         [[legs]]\nmatch = \"capped\"\nbehaviour = \"answer\"\nring_secs = 0.5\ntalk_secs = 3.0\n\n\
         [[legs]]\nmatch = \"backup\"\nbehaviour = \"answer\"\nring_secs = 1.0\ntalk_secs = 1.0\n",
    )
    .unwrap();

    // Watch the shared live counter while both nodes take calls.
    let sampler_db = db.client().await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let sampler = tokio::spawn(async move {
        let mut max_live = 0i64;
        while !stop.load(Ordering::SeqCst) {
            if let Ok(Some(row)) = sampler_db
                .query_opt("SELECT reserved FROM cap_counters WHERE owner_kind = 'destination' AND metric = 'live'", &[])
                .await
            {
                max_live = max_live.max(row.get::<_, i64>(0));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        max_live
    });
    let (a, b) = tokio::join!(
        bidbridge::simulate::run_freeswitch(nodes[0].esl_addr.unwrap(), &scenario),
        bidbridge::simulate::run_freeswitch(nodes[1].esl_addr.unwrap(), &scenario),
    );
    done.store(true, Ordering::SeqCst);
    let max_live = sampler.await.unwrap();
    assert_eq!(a.failed + b.failed, 0);

    let client = db.client().await;
    assert!(
        common::eventually(Duration::from_secs(20), || async {
            client
                .query_one("SELECT count(*) FROM calls", &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 500
        })
        .await
    );
    let sold: i64 = client
        .query_one(
            "SELECT count(*) FROM calls WHERE winner_destination_id = 'd'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        sold, 50,
        "exactly the cap of 50 calls reached the destination"
    );
    let by_node: Vec<i64> = client
        .query("SELECT count(*) FROM calls WHERE winner_destination_id = 'd' GROUP BY node_id ORDER BY node_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(by_node.len(), 2, "both nodes sold calls: {by_node:?}");
    assert!(max_live <= 5, "{max_live} calls live at once");
    assert!(
        max_live >= 2,
        "calls never overlapped; the concurrency cap was not exercised"
    );
    let backup: i64 = client
        .query_one(
            "SELECT count(*) FROM calls WHERE disposition = 'backup'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(backup, 450, "every other call went to the backup line");
    for node in nodes {
        node.shutdown();
    }
}
