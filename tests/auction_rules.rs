//! The auction's rules, each with a test that fails if the rule is dropped:
//! real loopback HTTP buyers, the real auctioneer, and (for the rules that
//! span calls) the real daemon with PostgreSQL and the switch simulator.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bidbridge::auction::eligibility::{CallFacts, OpenGate};
use bidbridge::auction::{AuctionInput, Auctioneer, NeutralScorer};
use bidbridge::catalog::Snapshot;
use bidbridge::catalog::spec::{CatalogDoc, DocFormat};
use bidbridge::config::AuctionConfig;
use bidbridge::ledger::record::BidStatus;
use bidbridge::money::Cents;
use bidbridge::phone::E164;
use bidbridge::simulate::buyers::{self, BuyerServer};
use bidbridge::simulate::scenario::{BidBehaviour, BuyerSpec, Scenario};
use common::{TestDb, eventually, test_config};

async fn buyer(price: &str) -> BuyerServer {
    buyers::spawn(&BuyerSpec {
        listen: "127.0.0.1:0".parse().unwrap(),
        behaviour: BidBehaviour::Bid,
        price: Some(price.parse().unwrap()),
        delay_ms: 2,
        dialect: None,
        min_talk_secs: None,
        latency: None,
    })
    .await
    .unwrap()
}

fn snapshot(campaign_extra: &str, publisher_extra: &str, destinations: &str) -> Snapshot {
    let text = format!(
        r#"
[[publishers]]
id = "pub"
name = "P"
{publisher_extra}

[[campaigns]]
id = "c"
name = "C"
vertical = "insurance.auto"
floor = "5.00"
auction_deadline_ms = 500
{campaign_extra}

[[numbers]]
number = "+18005550100"
campaign = "c"
publisher = "pub"
source = "search"
{destinations}
"#
    );
    let doc = CatalogDoc::parse(&text, DocFormat::Toml).unwrap();
    Snapshot::build(&doc).unwrap_or_else(|e| panic!("{e:?}"))
}

fn destination(id: &str, url: &str, extra: &str) -> String {
    format!(
        "\n[[buyers]]\nid = \"{id}\"\nname = \"{id}\"\n\n[[buyers.destinations]]\nid = \"{id}\"\ncampaigns = [\"c\"]\nping = {{ url = \"{url}\" }}\ndial = {{ sip = \"sip:{id}@127.0.0.1\" }}\n{extra}\n"
    )
}

fn auctioneer(config: AuctionConfig) -> Auctioneer {
    Auctioneer::new(config, b"test-hash-key".to_vec())
}

async fn auction(
    auctioneer: &Auctioneer,
    snapshot: &Snapshot,
    caller: &str,
    tags: &[(&str, &str)],
) -> bidbridge::auction::AuctionOutcome {
    let route = snapshot.numbers.values().next().unwrap().clone();
    let tags: BTreeMap<String, String> = tags
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let caller = E164::parse_strict(caller).unwrap();
    let facts = CallFacts::derive(Some(&caller), &tags, &route.source, chrono::Utc::now());
    let input = AuctionInput {
        call_id: "00000000-0000-0000-0000-000000000001",
        route: &route,
        facts: &facts,
        now: chrono::Utc::now(),
        exclude: &HashSet::new(),
        consent: false,
        static_only: false,
        test: false,
    };
    auctioneer.run(&input, &OpenGate, &NeutralScorer).await
}

fn status_of(
    outcome: &bidbridge::auction::AuctionOutcome,
    id: &str,
) -> (BidStatus, Option<String>) {
    let bid = outcome
        .bids
        .iter()
        .find(|b| b.destination_id == id)
        .unwrap_or_else(|| panic!("no row for {id}"));
    (bid.status, bid.reason.clone())
}

#[tokio::test]
async fn targeting_by_state_zip_tags_and_source_keeps_buyers_out_before_any_ping() {
    let (il, tx, zip, home) = (
        buyer("10.00").await,
        buyer("11.00").await,
        buyer("12.00").await,
        buyer("13.00").await,
    );
    let snap = snapshot(
        "",
        "",
        &[
            destination("il", &il.url(), "targeting = { states = [\"IL\"] }"),
            destination("tx", &tx.url(), "targeting = { states = [\"TX\"] }"),
            destination(
                "zip",
                &zip.url(),
                "targeting = { zip_prefixes = [\"100\"] }",
            ),
            destination(
                "home",
                &home.url(),
                "targeting = { tags = [\"product=home\"], exclude_sources = [\"facebook\"] }",
            ),
        ]
        .concat(),
    );
    // A Chicago caller (312) who chose auto, ZIP 60601.
    let outcome = auction(
        &auctioneer(AuctionConfig::default()),
        &snap,
        "+13125550111",
        &[("product", "auto"), ("zip", "60601")],
    )
    .await;
    assert_eq!(status_of(&outcome, "il").0, BidStatus::Bid);
    assert_eq!(
        status_of(&outcome, "tx"),
        (BidStatus::Ineligible, Some("targeting: state".into()))
    );
    assert_eq!(
        status_of(&outcome, "zip"),
        (BidStatus::Ineligible, Some("targeting: zip".into()))
    );
    assert_eq!(
        status_of(&outcome, "home"),
        (BidStatus::Ineligible, Some("targeting: tags".into()))
    );
    assert_eq!(
        (
            tx.requests().len(),
            zip.requests().len(),
            home.requests().len()
        ),
        (0, 0, 0),
        "ineligible buyers were pinged"
    );
    assert_eq!(il.requests().len(), 1);
}

#[tokio::test]
async fn a_destination_closing_before_the_call_could_connect_is_not_offered_the_call() {
    let (open, closed) = (buyer("10.00").await, buyer("20.00").await);
    let now = chrono::Utc::now().with_timezone(&chrono_tz::America::Chicago);
    let day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        [chrono::Datelike::weekday(&now).num_days_from_monday() as usize];
    // Closes in one minute, while ringing plus the connect allowance is 50 s more than that.
    let closes = now + chrono::Duration::minutes(1);
    let range = format!("00:00-{}", closes.format("%H:%M"));
    let closing = format!(
        "timezone = \"America/Chicago\"\nring_timeout_secs = 60\nhours = {{ {day} = [\"{range}\"] }}"
    );
    let snap = snapshot(
        "",
        "",
        &[
            destination("open", &open.url(), ""),
            destination("closing", &closed.url(), &closing),
        ]
        .concat(),
    );
    let outcome = auction(
        &auctioneer(AuctionConfig::default()),
        &snap,
        "+13125550111",
        &[],
    )
    .await;
    if closes.date_naive() == now.date_naive() {
        let (status, reason) = status_of(&outcome, "closing");
        assert_eq!(status, BidStatus::Ineligible);
        assert!(
            matches!(
                reason.as_deref(),
                Some("closing before the call could connect") | Some("outside hours")
            ),
            "{reason:?}"
        );
    }
    assert_eq!(status_of(&outcome, "open").0, BidStatus::Bid);
}

#[tokio::test]
async fn the_publisher_floor_applies_on_top_of_the_campaign_floor() {
    let (low, high) = (buyer("6.00").await, buyer("9.00").await);
    let snap = snapshot(
        "",
        "floor = \"8.00\"",
        &[
            destination("low", &low.url(), ""),
            destination("high", &high.url(), ""),
        ]
        .concat(),
    );
    let outcome = auction(
        &auctioneer(AuctionConfig::default()),
        &snap,
        "+13125550111",
        &[],
    )
    .await;
    assert_eq!(
        status_of(&outcome, "low").0,
        BidStatus::BelowFloor,
        "6.00 clears the campaign's 5.00 but not the publisher's 8.00"
    );
    assert_eq!(outcome.offers.len(), 1);
}

#[tokio::test]
async fn second_price_charges_the_next_bid_plus_the_increment_and_records_both() {
    let (a, b, c) = (
        buyer("20.00").await,
        buyer("15.00").await,
        buyer("9.00").await,
    );
    let snap = snapshot(
        "auction_type = \"second_price\"\nsecond_price_increment = \"0.25\"",
        "",
        &[
            destination("a", &a.url(), ""),
            destination("b", &b.url(), ""),
            destination("c", &c.url(), ""),
        ]
        .concat(),
    );
    let outcome = auction(
        &auctioneer(AuctionConfig::default()),
        &snap,
        "+13125550111",
        &[],
    )
    .await;
    let charged: Vec<(String, Cents, Cents)> = outcome
        .offers
        .iter()
        .map(|o| (o.destination.id.clone(), o.price_bid, o.price_charged))
        .collect();
    assert_eq!(
        charged,
        vec![
            ("a".into(), Cents(2000), Cents(1525)),
            ("b".into(), Cents(1500), Cents(925)),
            ("c".into(), Cents(900), Cents(525))
        ]
    );
}

#[tokio::test]
async fn a_higher_tier_wins_unless_the_lower_tier_beats_it_by_the_margin() {
    let (t1, t2) = (buyer("10.00").await, buyer("12.00").await);
    let dests = [
        destination("t1", &t1.url(), "tier = 1"),
        destination("t2", &t2.url(), "tier = 2"),
    ]
    .concat();
    let strict = snapshot("tier_margin = \"3.00\"", "", &dests);
    let outcome = auction(
        &auctioneer(AuctionConfig::default()),
        &strict,
        "+13125550111",
        &[],
    )
    .await;
    assert_eq!(
        outcome.offers[0].destination.id, "t1",
        "tier 2 bid only 2.00 more, the margin is 3.00"
    );
    let loose = snapshot("tier_margin = \"1.00\"", "", &dests);
    let outcome = auction(
        &auctioneer(AuctionConfig::default()),
        &loose,
        "+13125550111",
        &[],
    )
    .await;
    assert_eq!(
        outcome.offers[0].destination.id, "t2",
        "tier 2 beats tier 1 by more than the 1.00 margin"
    );
}

#[tokio::test]
async fn a_repeat_ping_for_the_same_caller_reuses_the_earlier_answer() {
    let a = buyer("10.00").await;
    let snap = snapshot("", "", &destination("a", &a.url(), ""));
    let auctioneer = auctioneer(AuctionConfig::default());
    let first = auction(&auctioneer, &snap, "+13125550111", &[]).await;
    let again = auction(&auctioneer, &snap, "+13125550111", &[]).await;
    let other = auction(&auctioneer, &snap, "+13125550122", &[]).await;
    assert_eq!(
        a.requests().len(),
        2,
        "the repeat caller's ping was sent again"
    );
    assert_eq!(first.offers[0].price_bid, again.offers[0].price_bid);
    assert!(
        status_of(&again, "a")
            .1
            .is_some_and(|r| r.starts_with("reused the answer"))
    );
    assert_eq!(status_of(&other, "a").1, None);
    // Turned off, every auction pings.
    let plain = Auctioneer::new(
        AuctionConfig {
            reuse_bid_secs: 0,
            ..AuctionConfig::default()
        },
        Vec::new(),
    );
    auction(&plain, &snap, "+13125550111", &[]).await;
    auction(&plain, &snap, "+13125550111", &[]).await;
    assert_eq!(a.requests().len(), 4);
}

#[tokio::test]
async fn a_destinations_ping_rate_limit_is_respected() {
    let a = buyer("10.00").await;
    let snap = snapshot(
        "",
        "",
        &destination("a", &a.url(), "").replace("ping = {", "ping = { rate_limit_per_sec = 2,"),
    );
    let auctioneer = Auctioneer::new(
        AuctionConfig {
            reuse_bid_secs: 0,
            ..AuctionConfig::default()
        },
        Vec::new(),
    );
    // Wait for the start of a second so the three auctions share one.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    tokio::time::sleep(Duration::from_nanos(
        1_000_000_000 - u64::from(now.subsec_nanos()) + 5_000_000,
    ))
    .await;
    let mut statuses = Vec::new();
    for n in 0..3 {
        let outcome = auction(&auctioneer, &snap, &format!("+1312555011{n}"), &[]).await;
        statuses.push(status_of(&outcome, "a"));
    }
    assert_eq!(a.requests().len(), 2);
    assert_eq!(
        statuses[2],
        (BidStatus::Ineligible, Some("ping rate limit".into()))
    );
}

#[tokio::test]
async fn pings_carry_a_per_buyer_hash_never_the_number() {
    let (a, b) = (buyer("10.00").await, buyer("11.00").await);
    let snap = snapshot(
        "",
        "",
        &[
            destination("a", &a.url(), ""),
            destination("b", &b.url(), ""),
        ]
        .concat(),
    );
    auction(
        &auctioneer(AuctionConfig::default()),
        &snap,
        "+13125550111",
        &[],
    )
    .await;
    let hash = |server: &BuyerServer| {
        let body: serde_json::Value = serde_json::from_slice(&server.requests()[0]).unwrap();
        let text = body.to_string();
        for form in ["+13125550111", "13125550111", "3125550111", "555-0111"] {
            assert!(
                !text.contains(form),
                "the caller's number leaked as {form}: {text}"
            );
        }
        assert_eq!(body["caller"]["area_code"], "312");
        assert_eq!(body["caller"]["state"], "IL");
        body["caller"]["number_hash"].as_str().unwrap().to_string()
    };
    assert_ne!(
        hash(&a),
        hash(&b),
        "hashes must differ per buyer so lists cannot be joined"
    );
}

// --- rules that span calls: the real daemon -------------------------------

const LEGS: &str = r#"
[[legs]]
match = "sip:noanswer"
behaviour = "no_answer"

[[legs]]
match = "sip:answer"
behaviour = "answer"
ring_secs = 1.0
talk_secs = 90.0

[[legs]]
match = "backup"
behaviour = "answer"
ring_secs = 1.0
talk_secs = 20.0
"#;

fn daemon_catalog(campaign_extra: &str, destinations: &str) -> String {
    format!(
        r#"
[[publishers]]
id = "pub"
name = "P"

[[campaigns]]
id = "c"
name = "C"
vertical = "v"
min_talk_secs = 30
backup = {{ extension = "backup", context = "default" }}
{campaign_extra}

[[numbers]]
number = "+18005550100"
campaign = "c"
publisher = "pub"
{destinations}
"#
    )
}

fn static_destination(id: &str, price: &str, leg: &str, extra: &str) -> String {
    format!(
        "\n[[buyers]]\nid = \"{id}\"\nname = \"{id}\"\n\n[[buyers.destinations]]\nid = \"{id}\"\ncampaigns = [\"c\"]\nstatic_price = \"{price}\"\ndial = {{ sip = \"sip:{leg}@127.0.0.1\" }}\n{extra}\n"
    )
}

async fn run_calls(
    catalog: &str,
    config: impl FnOnce(&mut bidbridge::config::Config),
    scenario: &str,
) -> (TestDb, Vec<tokio_postgres::Row>) {
    let db = TestDb::migrated().await;
    db.apply_catalog(catalog).await;
    let journal = tempfile::tempdir().unwrap();
    let mut cfg = test_config(&db, journal.path());
    config(&mut cfg);
    let running = bidbridge::server::start(cfg).await.unwrap();
    let services = running.services.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            services.catalog.is_loaded()
        })
        .await
    );
    let scenario = Scenario::parse(&format!("{scenario}\n{LEGS}")).unwrap();
    let n = scenario.run.calls as i64;
    let report = bidbridge::simulate::run_freeswitch(running.esl_addr.unwrap(), &scenario).await;
    assert_eq!(report.failed, 0);
    let client = db.client().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            client
                .query_one("SELECT count(*) FROM calls", &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
                == n
        })
        .await
    );
    let rows = client
        .query("SELECT * FROM calls ORDER BY arrived_at", &[])
        .await
        .unwrap();
    running.shutdown();
    let _keep = Arc::new(journal);
    (db, rows)
}

/// Three calls from the same number, one after another.
const SAME_CALLER_THREE_TIMES: &str =
    "[run]\ncalls = 3\nrate_per_sec = 0.8\ntime_scale = 0.01\ncaller_base = \"+13125550100\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_callers_follow_the_campaigns_rule() {
    // Same caller three times: scenario callers are base + n, so pin the number.
    let scenario = SAME_CALLER_THREE_TIMES.replace("calls = 3", "calls = 1");
    for (action, check) in [("not_payable", 0), ("backup", 1), ("route_previous", 2)] {
        let catalog = daemon_catalog(
            &format!("duplicate = {{ window_secs = 3600, action = \"{action}\" }}"),
            &[
                static_destination("rich", "30.00", "answer-rich", ""),
                static_destination("poor", "10.00", "answer-poor", ""),
            ]
            .concat(),
        );
        let db = TestDb::migrated().await;
        db.apply_catalog(&catalog).await;
        // First call: "poor" takes it (we make "rich" unreachable for it by
        // disabling it), then "rich" is enabled again for the repeat calls.
        let journal = tempfile::tempdir().unwrap();
        let running = bidbridge::server::start(test_config(&db, journal.path()))
            .await
            .unwrap();
        let services = running.services.clone();
        assert!(
            eventually(Duration::from_secs(10), || async {
                services.catalog.is_loaded()
            })
            .await
        );
        let client = db.client().await;
        client
            .execute(
                "UPDATE destinations SET enabled = false WHERE id = 'rich'",
                &[],
            )
            .await
            .unwrap();
        assert!(
            eventually(Duration::from_secs(2), || async {
                !services.catalog.campaign("c").unwrap().destinations[1].enabled
            })
            .await
        );
        let legs = format!(
            "{scenario}\n{LEGS}\n[[legs]]\nmatch = \"answer-\"\nbehaviour = \"answer\"\nring_secs = 1.0\ntalk_secs = 90.0\n"
        );
        let s = Scenario::parse(&legs).unwrap();
        assert_eq!(
            bidbridge::simulate::run_freeswitch(running.esl_addr.unwrap(), &s)
                .await
                .failed,
            0
        );
        client
            .execute(
                "UPDATE destinations SET enabled = true WHERE id = 'rich'",
                &[],
            )
            .await
            .unwrap();
        assert!(
            eventually(Duration::from_secs(2), || async {
                services
                    .catalog
                    .campaign("c")
                    .unwrap()
                    .destinations
                    .iter()
                    .all(|d| d.enabled)
            })
            .await
        );
        assert_eq!(
            bidbridge::simulate::run_freeswitch(running.esl_addr.unwrap(), &s)
                .await
                .failed,
            0
        );
        assert!(
            eventually(Duration::from_secs(10), || async {
                client
                    .query_one("SELECT count(*) FROM calls", &[])
                    .await
                    .unwrap()
                    .get::<_, i64>(0)
                    == 2
            })
            .await
        );
        let rows = client.query("SELECT disposition, winner_destination_id, payable, notes FROM calls ORDER BY arrived_at", &[]).await.unwrap();
        assert_eq!(rows[0].get::<_, Option<String>>(1).as_deref(), Some("poor"));
        let repeat = &rows[1];
        match check {
            0 => {
                assert_eq!(
                    repeat.get::<_, Option<String>>(1).as_deref(),
                    Some("rich"),
                    "not_payable routes normally"
                );
                assert!(
                    !repeat.get::<_, bool>(2),
                    "but the repeat call is not payable"
                );
            }
            1 => assert_eq!(
                repeat.get::<_, String>(0),
                "backup",
                "backup sends the repeat caller to the backup line"
            ),
            _ => assert_eq!(
                repeat.get::<_, Option<String>>(1).as_deref(),
                Some("poor"),
                "route_previous goes to the buyer who had the caller"
            ),
        }
        running.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_leaves_calls_unanswered_is_paused() {
    let catalog = daemon_catalog(
        "",
        &[
            static_destination("deaf", "30.00", "noanswer", "ring_timeout_secs = 5"),
            static_destination("ok", "10.00", "answer", ""),
        ]
        .concat(),
    );
    let (_db, rows) = run_calls(
        &catalog,
        |c| {
            c.auction.health_unanswered = 2;
            c.auction.health_pause_secs = 3600;
        },
        "[run]\ncalls = 4\nrate_per_sec = 0.8\ntime_scale = 0.01\n",
    )
    .await;
    let first_attempts: Vec<String> = rows
        .iter()
        .map(|r| {
            r.get::<_, Option<String>>("winner_destination_id")
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        first_attempts,
        vec!["ok", "ok", "ok", "ok"],
        "every call still reached the answering buyer"
    );
    // The first two calls rang "deaf" first; after two misses it is paused.
    let client = _db.client().await;
    let deaf_rings: i64 = client
        .query_one(
            "SELECT count(*) FROM bridge_attempts WHERE destination_id = 'deaf'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(deaf_rings, 2, "a paused destination kept ringing");
    let paused: i64 = client
        .query_one("SELECT count(*) FROM bids WHERE destination_id = 'deaf' AND reason = 'paused: calls left unanswered'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(paused, 2);
}

/// A buyer whose bids expire after one second.
async fn expiring_bidder() -> (String, Arc<std::sync::atomic::AtomicU32>) {
    use axum::routing::post;
    let pings = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = pings.clone();
    let app = axum::Router::new().route(
        "/bid",
        post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                axum::Json(serde_json::json!({"bid": {"price": 15.0, "bid_id": "short-lived", "expires_in_secs": 1}}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/bid", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, pings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_bid_is_skipped_or_the_auction_rerun() {
    for (action, expect_winner, expect_pings) in [("skip", None, 1), ("rerun", Some("late"), 2)] {
        let (url, pings) = expiring_bidder().await;
        // "first" bids more and rings 2 s (20 simulated s at time_scale 0.1)
        // without answering: by then the other bid has expired.
        let catalog = daemon_catalog(
            &format!("bid_expiry = \"{action}\""),
            &[
                static_destination("first", "30.00", "noanswer", "ring_timeout_secs = 20"),
                format!("\n[[buyers]]\nid = \"late\"\nname = \"late\"\n\n[[buyers.destinations]]\nid = \"late\"\ncampaigns = [\"c\"]\nping = {{ url = \"{url}\" }}\ndial = {{ sip = \"sip:answer@127.0.0.1\" }}\n"),
            ]
            .concat(),
        );
        let (db, rows) = run_calls(
            &catalog,
            |c| c.auction.reuse_bid_secs = 0,
            "[run]\ncalls = 1\nrate_per_sec = 1.0\ntime_scale = 0.1\n",
        )
        .await;
        assert_eq!(
            rows[0]
                .get::<_, Option<String>>("winner_destination_id")
                .as_deref(),
            expect_winner,
            "{action}"
        );
        assert_eq!(
            pings.load(std::sync::atomic::Ordering::SeqCst),
            expect_pings,
            "{action}"
        );
        let client = db.client().await;
        let skipped: i64 = client
            .query_one("SELECT count(*) FROM bridge_attempts WHERE outcome = 'skipped' AND cause = 'bid expired before its turn'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            skipped, 1,
            "{action}: the expired bid's turn is recorded as skipped"
        );
    }
}
