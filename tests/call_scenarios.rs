//! Whole calls through the real daemon over loopback: the built-in
//! FreeSWITCH simulator places the calls on the daemon's ESL port, buyers
//! are real HTTP servers on loopback (slow ones, failing ones, ones that
//! answer garbage), the store is a real PostgreSQL. Each test reads the
//! call records back and checks what the daemon decided.

mod common;

use std::time::Duration;

use bidbridge::simulate::buyers::{self, BuyerServer};
use bidbridge::simulate::scenario::{BidBehaviour, BuyerSpec, Scenario};
use common::{TestDb, eventually, test_config};

/// A loopback bidder on an ephemeral port.
async fn buyer(behaviour: BidBehaviour, price: &str, delay_ms: u64) -> BuyerServer {
    buyers::spawn(&BuyerSpec {
        listen: "127.0.0.1:0".parse().unwrap(),
        behaviour,
        price: Some(price.parse().unwrap()),
        delay_ms,
        dialect: None,
        min_talk_secs: None,
        latency: None,
    })
    .await
    .expect("buyer server")
}

/// One destination per bidder: (destination id, ping URL, leg name).
fn catalog(
    deadline_ms: u32,
    floor: &str,
    destinations: &[(&str, String, &str)],
    extra_campaign: &str,
) -> String {
    let mut text = format!(
        r#"
[[publishers]]
id = "pub"
name = "Publisher"
payout = {{ fixed = "4.00" }}

[[campaigns]]
id = "auto"
name = "Auto"
vertical = "insurance.auto"
floor = "{floor}"
auction_deadline_ms = {deadline_ms}
min_talk_secs = 60
backup = {{ extension = "backup", context = "default" }}
{extra_campaign}
[campaigns.ivr]
start = "product"

[[campaigns.ivr.nodes]]
id = "product"
prompt = "welcome"
options = {{ "1" = {{ tag = "product=auto", next = "zip" }} }}

[[campaigns.ivr.nodes]]
id = "zip"
prompt = "zip"
collect = {{ digits = 5, tag = "zip" }}

[[numbers]]
number = "+18005550100"
campaign = "auto"
publisher = "pub"
source = "search"
"#
    );
    for (id, url, leg) in destinations {
        text.push_str(&format!(
            "\n[[buyers]]\nid = \"{id}\"\nname = \"{id}\"\n\n[[buyers.destinations]]\nid = \"{id}\"\ncampaigns = [\"auto\"]\nping = {{ url = \"{url}\" }}\ndial = {{ sip = \"sip:{leg}@127.0.0.1:5090\" }}\nring_timeout_secs = 20\n"
        ));
    }
    text
}

const LEGS: &str = r#"
[[legs]]
match = "leg-noanswer"
behaviour = "no_answer"

[[legs]]
match = "leg-busy"
behaviour = "busy"
ring_secs = 1.0

[[legs]]
match = "leg-answer"
behaviour = "answer"
ring_secs = 3.0
talk_secs = 95.0

[[legs]]
match = "backup"
behaviour = "answer"
ring_secs = 1.0
talk_secs = 30.0
"#;

fn scenario(calls: u32, rate: f64, callers: &str) -> Scenario {
    let text = format!(
        "[run]\ncalls = {calls}\nrate_per_sec = {rate}\ntime_scale = 0.01\ntracking_number = \"+18005550100\"\n{callers}\n{LEGS}"
    );
    Scenario::parse(&text).expect("scenario")
}

struct Daemon {
    db: TestDb,
    running: bidbridge::server::Running,
    _journal: tempfile::TempDir,
}

async fn daemon(catalog_toml: &str) -> Daemon {
    let db = TestDb::migrated().await;
    db.apply_catalog(catalog_toml).await;
    let journal = tempfile::tempdir().unwrap();
    let running = bidbridge::server::start(test_config(&db, journal.path()))
        .await
        .expect("daemon starts");
    let catalog = running.services.catalog.clone();
    assert!(eventually(Duration::from_secs(10), || async { catalog.is_loaded() }).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Daemon {
        db,
        running,
        _journal: journal,
    }
}

impl Daemon {
    async fn call(&self, scenario: &Scenario) -> bidbridge::simulate::scenario::SimReport {
        let report =
            bidbridge::simulate::run_freeswitch(self.running.esl_addr.unwrap(), scenario).await;
        assert_eq!(
            report.failed,
            0,
            "simulated calls failed: {:#?}",
            report
                .traces
                .iter()
                .filter(|t| !t.completed)
                .collect::<Vec<_>>()
        );
        report
    }

    /// Waits for `n` call records and returns them, oldest first.
    async fn calls(&self, n: usize) -> Vec<tokio_postgres::Row> {
        let client = self.db.client().await;
        for _ in 0..200 {
            let rows = client
                .query("SELECT * FROM calls ORDER BY arrived_at", &[])
                .await
                .unwrap();
            if rows.len() >= n {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {n} call records");
    }

    async fn bids(
        &self,
        call: &tokio_postgres::Row,
    ) -> Vec<(String, String, Option<String>, Option<i64>)> {
        let id: uuid::Uuid = call.get("call_id");
        let client = self.db.client().await;
        client
            .query("SELECT destination_id, status, reason, price_cents FROM bids WHERE call_id = $1 ORDER BY seq", &[&id])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    async fn attempts(&self, call: &tokio_postgres::Row) -> Vec<(String, String, String)> {
        let id: uuid::Uuid = call.get("call_id");
        let client = self.db.client().await;
        client
            .query("SELECT coalesce(destination_id, ''), kind, outcome FROM bridge_attempts WHERE call_id = $1 ORDER BY seq", &[&id])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }
}

#[tokio::test]
async fn ivr_digit_three_bids_no_answer_busy_then_answered_and_payable() {
    let (a, b, c) = (
        buyer(BidBehaviour::Bid, "24.00", 5).await,
        buyer(BidBehaviour::Bid, "18.00", 5).await,
        buyer(BidBehaviour::Bid, "14.00", 5).await,
    );
    let d = daemon(&catalog(
        200,
        "5.00",
        &[
            ("a", a.url(), "leg-noanswer"),
            ("b", b.url(), "leg-busy"),
            ("c", c.url(), "leg-answer"),
        ],
        "",
    ))
    .await;
    d.call(&scenario(
        1,
        10.0,
        "[[callers]]\ndtmf = [\"1\", \"60601\"]\n",
    ))
    .await;
    let calls = d.calls(1).await;
    let call = &calls[0];
    assert_eq!(call.get::<_, String>("disposition"), "sold");
    assert_eq!(
        call.get::<_, serde_json::Value>("ivr_tags"),
        serde_json::json!({"product": "auto", "zip": "60601"})
    );
    assert_eq!(
        d.attempts(call).await,
        vec![
            ("a".into(), "winner".into(), "no_answer".into()),
            ("b".into(), "fallthrough".into(), "busy".into()),
            ("c".into(), "fallthrough".into(), "answered".into())
        ]
    );
    assert_eq!(
        call.get::<_, Option<String>>("winner_destination_id")
            .as_deref(),
        Some("c")
    );
    assert!(call.get::<_, bool>("payable"));
    assert_eq!(call.get::<_, i64>("revenue_cents"), 1400);
    assert_eq!(call.get::<_, i64>("payout_cents"), 400);
    let talk: i64 = call.get::<_, Option<i64>>("talk_ms").unwrap();
    assert!(
        (94_500..=95_500).contains(&talk),
        "talk {talk} ms, the switch said 95 s"
    );
    // Every buyer was pinged once, with the IVR answers and no caller number.
    for server in [&a, &b, &c] {
        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let body = String::from_utf8_lossy(&requests[0]);
        assert!(
            body.contains("\"zip\":\"60601\"") && body.contains("\"product\":\"auto\""),
            "{body}"
        );
        assert!(
            !body.contains("5550100") && !body.contains("3125550"),
            "caller number leaked: {body}"
        );
    }
    d.running.shutdown();
}

#[tokio::test]
async fn caller_hangs_up_in_each_stage() {
    // The slow buyer keeps the auction open ~600 ms so a hang-up lands in it.
    let slow = buyer(BidBehaviour::Bid, "20.00", 600).await;
    let fast = buyer(BidBehaviour::Bid, "15.00", 5).await;
    let d = daemon(&catalog(
        1500,
        "5.00",
        &[
            ("slow", slow.url(), "leg-noanswer"),
            ("fast", fast.url(), "leg-answer"),
        ],
        "",
    ))
    .await;
    let callers = r#"
[[callers]]
dtmf = ["1", "60601"]
hangup = { stage = "prompt", after_secs = 0.5 }

[[callers]]
dtmf = ["1", "60601"]
hangup = { stage = "auction", after_secs = 10.0 }

[[callers]]
dtmf = ["1", "60601"]
hangup = { stage = "ringing", after_secs = 5.0 }

[[callers]]
dtmf = ["1", "60601"]
hangup = { stage = "bridged", after_secs = 20.0 }
"#;
    // One call at a time, so records come back in caller order.
    let s = scenario(4, 0.5, callers);
    d.call(&s).await;
    let calls = d.calls(4).await;
    let view: Vec<(String, String, Option<String>)> = calls
        .iter()
        .map(|c| {
            (
                c.get("disposition"),
                c.get("stage_reached"),
                c.get("hung_up_by"),
            )
        })
        .collect();
    assert_eq!(
        view[0],
        ("abandoned".into(), "ivr".into(), Some("caller".into())),
        "{view:?}"
    );
    assert_eq!(
        view[1],
        ("abandoned".into(), "auction".into(), Some("caller".into())),
        "{view:?}"
    );
    assert_eq!(
        view[2],
        ("abandoned".into(), "connect".into(), Some("caller".into())),
        "{view:?}"
    );
    assert_eq!(
        d.attempts(&calls[2]).await,
        vec![("slow".into(), "winner".into(), "caller_gone".into())]
    );
    // Talked 20 s then hung up: sold, not payable (60 s minimum).
    assert_eq!(view[3].0, "sold");
    assert_eq!(view[3].2.as_deref(), Some("caller"));
    assert!(!calls[3].get::<_, bool>("payable"));
    assert!(
        calls[3]
            .get::<_, String>("payable_reason")
            .contains("under the 60s minimum")
    );
    // No slot or session leaked.
    assert_eq!(d.running.services.metrics.open_sessions(), 0);
    d.running.shutdown();
}

#[tokio::test]
async fn no_bid_above_the_floor_sends_the_caller_to_the_backup_line() {
    let silent = buyer(BidBehaviour::Silent, "0", 0).await;
    let cheap = buyer(BidBehaviour::Bid, "3.00", 5).await;
    let d = daemon(&catalog(
        150,
        "5.00",
        &[
            ("silent", silent.url(), "leg-answer"),
            ("cheap", cheap.url(), "leg-answer"),
        ],
        "",
    ))
    .await;
    d.call(&scenario(
        1,
        10.0,
        "[[callers]]\ndtmf = [\"1\", \"60601\"]\n",
    ))
    .await;
    let calls = d.calls(1).await;
    assert_eq!(calls[0].get::<_, String>("disposition"), "backup");
    let bids = d.bids(&calls[0]).await;
    assert!(
        bids.contains(&(
            "silent".into(),
            "timeout".into(),
            Some("no answer within 150 ms".into()),
            None
        )),
        "{bids:?}"
    );
    assert!(
        bids.iter()
            .any(|b| b.0 == "cheap" && b.1 == "below_floor" && b.3 == Some(300)),
        "{bids:?}"
    );
    assert_eq!(
        d.attempts(&calls[0]).await,
        vec![("".into(), "backup".into(), "answered".into())]
    );
    assert_eq!(calls[0].get::<_, i64>("revenue_cents"), 0);
    d.running.shutdown();
}

#[tokio::test]
async fn misbehaving_buyers_are_out_of_the_auction_with_the_reason_recorded() {
    let garbage = buyer(BidBehaviour::Garbage, "50.00", 0).await;
    let failing = buyer(BidBehaviour::Error, "50.00", 0).await;
    let huge = buyer(BidBehaviour::Huge, "50.00", 0).await;
    // Generous deadline so a loaded machine still reads the others in time.
    let late = buyer(BidBehaviour::Bid, "50.00", 2500).await;
    let good = buyer(BidBehaviour::Bid, "12.00", 5).await;
    let d = daemon(&catalog(
        1200,
        "5.00",
        &[
            ("garbage", garbage.url(), "leg-answer"),
            ("failing", failing.url(), "leg-answer"),
            ("huge", huge.url(), "leg-answer"),
            ("late", late.url(), "leg-answer"),
            ("good", good.url(), "leg-answer"),
        ],
        "",
    ))
    .await;
    d.call(&scenario(
        1,
        10.0,
        "[[callers]]\ndtmf = [\"1\", \"60601\"]\n",
    ))
    .await;
    let calls = d.calls(1).await;
    let bids = d.bids(&calls[0]).await;
    let status = |id: &str| {
        bids.iter()
            .find(|b| b.0 == id)
            .map(|b| (b.1.clone(), b.2.clone().unwrap_or_default()))
            .unwrap()
    };
    assert_eq!(status("garbage").0, "invalid");
    assert!(
        status("garbage").1.starts_with("malformed JSON"),
        "{:?}",
        status("garbage")
    );
    assert_eq!(status("failing"), ("invalid".into(), "HTTP 500".into()));
    assert_eq!(status("huge").0, "invalid");
    assert!(
        status("huge").1.contains("response over"),
        "{:?}",
        status("huge")
    );
    assert_eq!(
        status("late"),
        ("timeout".into(), "no answer within 1200 ms".into())
    );
    assert_eq!(status("good").0, "bid");
    assert_eq!(
        calls[0]
            .get::<_, Option<String>>("winner_destination_id")
            .as_deref(),
        Some("good")
    );
    d.running.shutdown();
}

#[tokio::test]
async fn the_auction_closes_as_soon_as_every_buyer_has_answered() {
    // A 4 s deadline and buyers answering in a few milliseconds: an auction
    // that waited for its deadline would take 4 s.
    let (a, b) = (
        buyer(BidBehaviour::Bid, "20.00", 5).await,
        buyer(BidBehaviour::NoBid, "0", 5).await,
    );
    let d = daemon(&catalog(
        4000,
        "5.00",
        &[("a", a.url(), "leg-answer"), ("b", b.url(), "leg-answer")],
        "",
    ))
    .await;
    d.call(&scenario(
        1,
        10.0,
        "[[callers]]\ndtmf = [\"1\", \"60601\"]\n",
    ))
    .await;
    let calls = d.calls(1).await;
    let auction_us: i64 = calls[0].get::<_, Option<i64>>("auction_us").unwrap();
    assert!(
        auction_us < 2_000_000,
        "the auction took {auction_us} µs of a 4 s deadline although both buyers answered at once"
    );
    d.running.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_simultaneous_calls_complete_with_nothing_leaked() {
    let (a, b) = (
        buyer(BidBehaviour::Bid, "20.00", 10).await,
        buyer(BidBehaviour::Bid, "15.00", 10).await,
    );
    let d = daemon(&catalog(
        2000,
        "5.00",
        &[("a", a.url(), "leg-busy"), ("b", b.url(), "leg-answer")],
        "",
    ))
    .await;
    let s = scenario(200, 2000.0, "[[callers]]\ndtmf = [\"1\", \"60601\"]\n");
    let report = d.call(&s).await;
    assert_eq!(report.completed, 200);
    let calls = d.calls(200).await;
    assert_eq!(calls.len(), 200);
    let mut dispositions = std::collections::BTreeMap::new();
    for c in &calls {
        *dispositions
            .entry(c.get::<_, String>("disposition"))
            .or_insert(0) += 1;
    }
    let client = d.db.client().await;
    let statuses: Vec<(String, String, i64)> = client
        .query(
            "SELECT status, coalesce(reason, ''), count(*) FROM bids GROUP BY 1, 2 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    // Every call ended in a buyer's or the backup's hands (a ping that
    // missed its deadline on this loaded debug build sends its call to the
    // backup, which is the designed behaviour).
    let handled = dispositions.get("sold").copied().unwrap_or(0)
        + dispositions.get("backup").copied().unwrap_or(0);
    assert_eq!(handled, 200, "{dispositions:?} bids: {statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|(s, _, _)| s == "bid" || s == "timeout"),
        "{statuses:?}"
    );
    let metrics = &d.running.services.metrics;
    assert!(
        eventually(Duration::from_secs(5), || async {
            metrics.open_sessions() == 0
        })
        .await,
        "sessions leaked"
    );
    let text = metrics.encode();
    assert!(
        text.contains("bidbridge_calls_in_progress{campaign=\"auto\"} 0"),
        "{text}"
    );
    d.running.shutdown();
}

#[tokio::test]
async fn a_buyer_hanging_up_within_the_recovery_window_hands_the_caller_to_the_next_bidder() {
    let (short, steady) = (
        buyer(BidBehaviour::Bid, "20.00", 5).await,
        buyer(BidBehaviour::Bid, "12.00", 5).await,
    );
    let d = daemon(&catalog(
        300,
        "5.00",
        &[
            ("short", short.url(), "leg-short"),
            ("steady", steady.url(), "leg-answer"),
        ],
        "",
    ))
    .await;
    let callers = "[[callers]]\ndtmf = [\"1\", \"60601\"]\n\n[[legs]]\nmatch = \"leg-short\"\nbehaviour = \"answer\"\nring_secs = 1.0\ntalk_secs = 4.0\n";
    d.call(&scenario(1, 10.0, callers)).await;
    let calls = d.calls(1).await;
    assert_eq!(
        d.attempts(&calls[0]).await,
        vec![
            ("short".into(), "winner".into(), "answered".into()),
            ("steady".into(), "recovery".into(), "answered".into())
        ]
    );
    // The caller's conversation with the second buyer is the sale.
    assert_eq!(
        calls[0]
            .get::<_, Option<String>>("winner_destination_id")
            .as_deref(),
        Some("steady")
    );
    assert!(calls[0].get::<_, bool>("payable"));
    d.running.shutdown();
}

#[tokio::test]
async fn when_every_leg_fails_and_there_is_no_backup_the_caller_hears_the_last_legs_cause() {
    let (a, b) = (
        buyer(BidBehaviour::Bid, "20.00", 5).await,
        buyer(BidBehaviour::Bid, "12.00", 5).await,
    );
    let text = catalog(
        300,
        "5.00",
        &[("a", a.url(), "leg-noanswer"), ("b", b.url(), "leg-busy")],
        "",
    )
    .replace(
        "backup = { extension = \"backup\", context = \"default\" }\n",
        "",
    );
    let d = daemon(&text).await;
    let report = d
        .call(&scenario(
            1,
            10.0,
            "[[callers]]\ndtmf = [\"1\", \"60601\"]\n",
        ))
        .await;
    let calls = d.calls(1).await;
    assert_eq!(calls[0].get::<_, String>("disposition"), "no_buyer");
    assert_eq!(
        calls[0].get::<_, Option<String>>("hangup_cause").as_deref(),
        Some("USER_BUSY"),
        "not NORMAL_CLEARING"
    );
    assert_eq!(
        report.traces[0].ended, "hangup USER_BUSY",
        "the switch was told the real cause"
    );
    d.running.shutdown();
}
