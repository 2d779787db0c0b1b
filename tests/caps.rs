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
    // Our own admissions count at once, without waiting for a refresh.
    assert_eq!(
        Gate::admit(caps.as_ref(), &destination, now),
        Err("destination at its concurrency cap")
    );
    // A second node learns it from the database.
    let other = Caps::new(bidbridge::db::pool(&db.config).unwrap(), "node-b".into());
    other.refresh().await.unwrap();
    assert_eq!(
        Gate::admit(other.as_ref(), &destination, now),
        Err("destination at its concurrency cap")
    );
    for reservation in held {
        caps.settle(reservation, false, None).await;
    }
    other.refresh().await.unwrap();
    assert_eq!(Gate::admit(other.as_ref(), &destination, now), Ok(()));
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
