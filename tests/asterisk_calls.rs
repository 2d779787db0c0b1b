//! The same calls through FreeSWITCH and through Asterisk give the same
//! records: one call flow, two thin adapters. The simulators play each
//! switch's side as recorded (outbound ESL; FastAGI); the daemon, the
//! buyers and the database are real.

mod common;

use std::time::Duration;

use bidbridge::simulate::buyers::{self, BuyerServer};
use bidbridge::simulate::scenario::{BidBehaviour, BuyerSpec, Scenario};
use common::{TestDb, eventually, test_config};

async fn buyer(price: &str) -> BuyerServer {
    buyers::spawn(&BuyerSpec {
        listen: "127.0.0.1:0".parse().unwrap(),
        behaviour: BidBehaviour::Bid,
        price: Some(price.parse().unwrap()),
        delay_ms: 5,
        dialect: None,
        min_talk_secs: None,
        latency: None,
    })
    .await
    .unwrap()
}

fn catalog(urls: [String; 3]) -> String {
    let mut text = String::from(
        r#"
[[publishers]]
id = "pub"
name = "Publisher"
payout = { share_percent = "25" }

[[campaigns]]
id = "auto"
name = "Auto"
vertical = "insurance.auto"
floor = "5.00"
auction_deadline_ms = 300
min_talk_secs = 60
auction_type = "second_price"
backup = { extension = "backup", context = "default" }

[campaigns.ivr]
start = "product"

[[campaigns.ivr.nodes]]
id = "product"
prompt = "welcome"
options = { "1" = { tag = "product=auto", next = "zip" } }

[[campaigns.ivr.nodes]]
id = "zip"
prompt = "zip"
collect = { digits = 5, tag = "zip" }

[[numbers]]
number = "+18005550100"
campaign = "auto"
publisher = "pub"
source = "search"
"#,
    );
    for (i, (url, leg)) in urls
        .iter()
        .zip(["leg-noanswer", "leg-busy", "leg-answer"])
        .enumerate()
    {
        text.push_str(&format!(
            "\n[[buyers]]\nid = \"b{i}\"\nname = \"b{i}\"\n\n[[buyers.destinations]]\nid = \"d{i}\"\ncampaigns = [\"auto\"]\nping = {{ url = \"{url}\" }}\ndial = {{ sip = \"sip:{leg}@127.0.0.1:5090\" }}\nring_timeout_secs = 20\n"
        ));
    }
    text
}

const SCENARIO: &str = r#"
[run]
calls = 4
rate_per_sec = 0.7
time_scale = 0.01
tracking_number = "+18005550100"

[[callers]]
dtmf = ["1", "60601"]

[[callers]]
dtmf = ["1", "60601"]
hangup = { stage = "prompt", after_secs = 0.5 }

[[callers]]
dtmf = ["1", "60601"]
hangup = { stage = "ringing", after_secs = 5.0 }

[[callers]]
dtmf = ["1", "60601"]
hangup = { stage = "bridged", after_secs = 30.0 }

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
"#;

/// What must be equal between switches: everything but ids, clocks and
/// the switch's name.
#[derive(Debug, PartialEq)]
struct Comparable {
    disposition: String,
    stage: String,
    tags: serde_json::Value,
    path: serde_json::Value,
    winner: Option<String>,
    price_bid: Option<i64>,
    price_charged: Option<i64>,
    talk_secs: Option<i64>,
    payable: bool,
    payable_reason: String,
    revenue: i64,
    payout: i64,
    hung_up_by: Option<String>,
    bids: Vec<(String, String, Option<i64>, Option<i16>)>,
    attempts: Vec<(String, String, String, Option<i64>)>,
}

async fn run(pbx: &str) -> Vec<Comparable> {
    let (a, b, c) = (
        buyer("24.00").await,
        buyer("18.00").await,
        buyer("14.00").await,
    );
    let db = TestDb::migrated().await;
    db.apply_catalog(&catalog([a.url(), b.url(), c.url()]))
        .await;
    let journal = tempfile::tempdir().unwrap();
    let running = bidbridge::server::start(test_config(&db, journal.path()))
        .await
        .unwrap();
    let catalog = running.services.catalog.clone();
    assert!(eventually(Duration::from_secs(10), || async { catalog.is_loaded() }).await);
    let scenario = Scenario::parse(SCENARIO).unwrap();
    let report = match pbx {
        "freeswitch" => {
            bidbridge::simulate::run_freeswitch(running.esl_addr.unwrap(), &scenario).await
        }
        _ => {
            bidbridge::simulate::asterisk::run_asterisk(running.agi_addr.unwrap(), &scenario).await
        }
    };
    assert_eq!(report.failed, 0, "{pbx}: {:#?}", report.traces);
    let client = db.client().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            client
                .query_one("SELECT count(*) FROM calls", &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 4
        })
        .await
    );
    let mut out = Vec::new();
    for call in client
        .query("SELECT * FROM calls ORDER BY arrived_at", &[])
        .await
        .unwrap()
    {
        let id: uuid::Uuid = call.get("call_id");
        assert_eq!(call.get::<_, String>("pbx"), pbx);
        let bids = client
            .query("SELECT destination_id, status, price_cents, rank FROM bids WHERE call_id = $1 ORDER BY destination_id", &[&id])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        let attempts = client
            .query(
                "SELECT coalesce(destination_id, ''), kind, outcome, round(talk_ms / 1000.0)::bigint FROM bridge_attempts WHERE call_id = $1 ORDER BY seq",
                &[&id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        out.push(Comparable {
            disposition: call.get("disposition"),
            stage: call.get("stage_reached"),
            tags: call.get("ivr_tags"),
            path: call.get("ivr_path"),
            winner: call.get("winner_destination_id"),
            price_bid: call.get("price_bid_cents"),
            price_charged: call.get("price_charged_cents"),
            talk_secs: call
                .get::<_, Option<i64>>("talk_ms")
                .map(|ms| (ms + 500) / 1000),
            payable: call.get("payable"),
            payable_reason: call.get("payable_reason"),
            revenue: call.get("revenue_cents"),
            payout: call.get("payout_cents"),
            hung_up_by: call.get("hung_up_by"),
            bids,
            attempts,
        });
    }
    running.shutdown();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_calls_give_the_same_records_on_both_switches() {
    let freeswitch = run("freeswitch").await;
    let asterisk = run("asterisk").await;
    // The scenario really exercised the flow.
    assert_eq!(freeswitch[0].disposition, "sold");
    assert_eq!(freeswitch[0].winner.as_deref(), Some("d2"));
    assert!(freeswitch[0].payable);
    // Second price: d2, ranked last, pays the floor plus the increment.
    assert_eq!(freeswitch[0].price_charged, Some(501));
    assert_eq!(freeswitch[1].stage, "ivr");
    assert_eq!(
        freeswitch[2].attempts.last().map(|a| a.2.as_str()),
        Some("caller_gone")
    );
    assert!(!freeswitch[3].payable);
    for (i, (f, a)) in freeswitch.iter().zip(&asterisk).enumerate() {
        assert_eq!(f, a, "call {i} differs between FreeSWITCH and Asterisk");
    }
}
