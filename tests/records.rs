//! Records after the call, against a real PostgreSQL and loopback HTTP
//! receivers: conversions (happy path, idempotency, every refusal), the
//! postback outbox (retries until delivered, every attempt recorded, give
//! up), and reports whose totals must equal sums over the raw rows.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use bidbridge::api::auth::hash_token;
use bidbridge::ledger::record::{
    AttemptKind, AttemptRecord, BidRecord, BidStatus, CallRecord, ConsentRecord, Disposition,
    Stage, StageTimes, Winner,
};
use bidbridge::money::Cents;
use bidbridge::pbx::{LegStatus, PbxKind};
use bidbridge::report::{self, GroupBy};
use common::{TestDb, eventually, test_config};

const TOKEN_A: &str = "token-of-buyer-a-0123456789";
const TOKEN_B: &str = "token-of-buyer-b-0123456789";
const ADMIN: &str = "admin-token-0123456789";

/// A loopback receiver: answers 500 to the first `fail_first` requests of
/// each path (and always 500 under `/always-fail`), 200 afterwards, and
/// remembers every request as `(path?query, status)`.
#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<(String, u16)>>>,
    seen: Arc<Mutex<HashMap<String, u32>>>,
    fail_first: u32,
}

impl Receiver {
    async fn start(fail_first: u32) -> (Receiver, SocketAddr) {
        let receiver = Receiver {
            fail_first,
            ..Receiver::default()
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (receiver, addr)
    }

    fn hits(&self) -> Vec<(String, u16)> {
        self.hits.lock().expect("lock").clone()
    }
}

async fn handle(State(r): State<Receiver>, uri: Uri) -> StatusCode {
    let path = uri.path().to_string();
    let n = {
        let mut seen = r.seen.lock().expect("lock");
        let n = seen.entry(path.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let status = if path.starts_with("/always-fail") || n <= r.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    r.hits
        .lock()
        .expect("lock")
        .push((uri.to_string(), status.as_u16()));
    status
}

fn catalog(receiver: SocketAddr) -> String {
    format!(
        r#"
[[publishers]]
id = "pub-acme"
name = "Acme Media"
payout = {{ fixed = "4.00" }}
postback_url = "http://{receiver}/pub?call={{call_id}}&src={{source}}&payout={{payout}}&d={{duration}}&ev={{event}}&v={{value}}"

[[campaigns]]
id = "auto"
name = "Auto insurance"
vertical = "insurance.auto"
floor = "5.00"
min_talk_secs = 60

[[numbers]]
number = "+18005550100"
campaign = "auto"
publisher = "pub-acme"
source = "search"

[[buyers]]
id = "buyer-a"
name = "Buyer A"
api_token_sha256 = "{a}"
notices = {{ win_url = "http://{receiver}/a/win?c={{call_id}}&p={{price}}", billing_url = "http://{receiver}/a/bill?c={{call_id}}&p={{price}}", loss_url = "http://{receiver}/a/loss?c={{call_id}}", postback_url = "http://{receiver}/a/conv?c={{call_id}}&ev={{event}}&v={{value}}" }}

[[buyers.destinations]]
id = "buyer-a-main"
campaigns = ["auto"]
static_price = "12.50"
dial = {{ sip = "sip:a@127.0.0.1:5090" }}

[[buyers]]
id = "buyer-b"
name = "Buyer B"
api_token_sha256 = "{b}"
notices = {{ loss_url = "http://{receiver}/always-fail/b/loss?c={{call_id}}&r={{reason}}" }}

[[buyers.destinations]]
id = "buyer-b-main"
campaigns = ["auto"]
static_price = "10.00"
dial = {{ sip = "sip:b@127.0.0.1:5090" }}
"#,
        a = hash_token(TOKEN_A),
        b = hash_token(TOKEN_B),
    )
}

fn bid(buyer: &str, status: BidStatus, price: Option<i64>, reason: Option<&str>) -> BidRecord {
    BidRecord {
        buyer_id: buyer.into(),
        destination_id: format!("{buyer}-main"),
        status,
        reason: reason.map(str::to_string),
        bid_id: Some(format!("bid-{buyer}-{}", Uuid::new_v4())),
        price: price.map(Cents),
        min_talk_secs: None,
        expires_at: None,
        latency_us: Some(5_000),
        rank: None,
        notices: Default::default(),
    }
}

/// A settled call: `winner` answered with `talk_secs`, charged `charged`.
#[allow(clippy::too_many_arguments)]
fn call(
    arrived: DateTime<Utc>,
    campaign: &str,
    publisher: &str,
    source: &str,
    bids: Vec<BidRecord>,
    winner: Option<(&str, i64)>,
    talk_secs: u64,
    payout: i64,
    auction_us: u64,
) -> CallRecord {
    let payable = winner.is_some() && talk_secs >= 60;
    let ended = arrived + chrono::Duration::seconds(talk_secs as i64 + 20);
    let attempts = winner
        .map(|(buyer, _)| AttemptRecord {
            buyer_id: Some(buyer.into()),
            destination_id: Some(format!("{buyer}-main")),
            kind: AttemptKind::Winner,
            target: "sip:x@127.0.0.1".into(),
            started_at: arrived,
            ring_ms: 3_400,
            answered_at: Some(arrived + chrono::Duration::seconds(4)),
            ended_at: Some(ended),
            talk_ms: Some(talk_secs * 1000),
            outcome: Some(LegStatus::Answered),
            cause: None,
            detail: None,
            ended_by: None,
        })
        .into_iter()
        .collect();
    CallRecord {
        call_id: Uuid::new_v4(),
        node_id: "test-node".into(),
        pbx: PbxKind::Freeswitch,
        channel_id: Uuid::new_v4().to_string(),
        caller: Some("+13125550123".into()),
        caller_raw: "+13125550123".into(),
        tracking_number: "+18005550100".into(),
        campaign_id: Some(campaign.into()),
        publisher_id: Some(publisher.into()),
        source: Some(source.into()),
        disposition: if winner.is_some() {
            Disposition::Sold
        } else {
            Disposition::NoBuyer
        },
        stage_reached: Stage::Settled,
        times: StageTimes {
            arrived_at: arrived,
            ended_at: ended,
            ..StageTimes::default()
        },
        ivr_tags: BTreeMap::from([("product".to_string(), "auto".to_string())]),
        ivr_path: vec![],
        bids,
        attempts,
        winner: winner.map(|(buyer, charged)| Winner {
            buyer_id: buyer.into(),
            destination_id: format!("{buyer}-main"),
            bid_id: Some(format!("win-{buyer}")),
            price_bid: Cents(charged + 100),
            price_charged: Cents(charged),
        }),
        currency: "USD".into(),
        talk_ms: winner.map(|_| talk_secs * 1000),
        min_talk_secs: winner.map(|_| 60),
        payable,
        payable_reason: String::new(),
        revenue: Cents(if payable {
            winner.map(|w| w.1).unwrap_or(0)
        } else {
            0
        }),
        payout: Cents(if payable { payout } else { 0 }),
        hangup_cause: None,
        hung_up_by: None,
        recording_path: None,
        auction_us: Some(auction_us),
        consents: vec![ConsentRecord {
            kind: "ivr".into(),
            reference: Some("consent-1".into()),
            prompt: None,
            key_pressed: Some("1".into()),
            page: None,
            consented_at: None,
            captured_at: arrived,
        }],
        sharing: vec![],
        opted_out: None,
        notes: vec![],
        attestation: None,
    }
}

async fn insert(db: &TestDb, records: &[CallRecord]) -> u64 {
    let mut client = db.client().await;
    bidbridge::ledger::store::insert_batch(&mut client, records)
        .await
        .expect("insert_batch")
}

async fn start_daemon(
    db: &TestDb,
    journal: &std::path::Path,
    tweak: impl FnOnce(&mut bidbridge::config::Config),
) -> (bidbridge::server::Running, String) {
    let mut config = test_config(db, journal);
    config.esl.enabled = false;
    config.agi.enabled = false;
    config.http.admin_token_sha256 = Some(hash_token(ADMIN));
    tweak(&mut config);
    let running = bidbridge::server::start(config).await.expect("start");
    let base = format!("http://{}", running.http_addr.expect("http"));
    let services = running.services.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let s = services.clone();
            async move { s.catalog.is_loaded() }
        })
        .await,
        "catalog never loaded"
    );
    (running, base)
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    body: String,
) -> (u16, serde_json::Value) {
    let mut request = http
        .post(format!("{base}/v1/conversions"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let json = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[tokio::test]
async fn conversions_are_stored_once_and_bad_reports_refused() {
    let db = TestDb::migrated().await;
    let (_receiver, addr) = Receiver::start(0).await;
    db.apply_catalog(&catalog(addr)).await;
    let now = Utc::now();
    let won = call(
        now - chrono::Duration::minutes(5),
        "auto",
        "pub-acme",
        "search",
        vec![bid("buyer-a", BidStatus::Bid, Some(1250), None)],
        Some(("buyer-a", 1250)),
        95,
        400,
        30_000,
    );
    insert(&db, std::slice::from_ref(&won)).await;
    let journal = tempfile::tempdir().expect("tmp");
    let (running, base) = start_daemon(&db, journal.path(), |c| {
        c.http.max_body_bytes = 1024;
        // Keep the outbox still so this test can look at its rows.
        c.postbacks.enabled = false;
    })
    .await;
    let http = reqwest::Client::new();
    let body = |call: &str, value: &str, key: &str| {
        format!(r#"{{"call_id":"{call}","event":"sale","value":{value},"key":"{key}"}}"#)
    };
    let id = won.call_id.to_string();

    // Happy path: 201, exact value, postbacks enqueued with event and value.
    let (status, first) = post(&http, &base, Some(TOKEN_A), body(&id, "120.10", "crm-1")).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["value"], "120.10");
    assert_eq!(first["value_cents"], 12010);
    assert_eq!(first["duplicate"], false);

    // Same key again (even with another value): 200 and the first row.
    let (status, again) = post(&http, &base, Some(TOKEN_A), body(&id, "999", "crm-1")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["value"], "120.10");
    assert_eq!(again["duplicate"], true);

    // By bid id: the winner's bid id resolves to the call.
    let bid_id = won.bids[0].bid_id.clone().expect("bid id");
    let (status, by_bid) = post(
        &http,
        &base,
        Some(TOKEN_A),
        format!(r#"{{"bid_id":"{bid_id}","event":"lead","value":"0","key":"crm-2"}}"#),
    )
    .await;
    assert_eq!(status, 201, "{by_bid}");
    assert_eq!(by_bid["call_id"], id.as_str());

    let client = db.client().await;
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM conversions WHERE call_id = $1",
            &[&won.call_id],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 2, "one row per key");
    let rows = client
        .query(
            "SELECT kind, url FROM postbacks WHERE conversion_id IS NOT NULL ORDER BY conversion_id, kind",
            &[],
        )
        .await
        .expect("postbacks");
    let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0].0, "buyer_conversion");
    assert!(got[0].1.ends_with("&ev=sale&v=120.10"), "{got:?}");
    assert_eq!(got[1].0, "publisher_conversion");
    assert!(got[1].1.contains("&ev=sale&v=120.10"), "{got:?}");

    // Every refusal, with a JSON reason.
    let cases: Vec<(Option<&str>, String, u16, &str)> = vec![
        (None, body(&id, "1", "k"), 401, "unauthorized"),
        (
            Some("wrong-token"),
            body(&id, "1", "k"),
            401,
            "unauthorized",
        ),
        (
            Some(TOKEN_A),
            body(&Uuid::new_v4().to_string(), "1", "k"),
            404,
            "unknown_call",
        ),
        (Some(TOKEN_B), body(&id, "1", "k"), 403, "not_your_call"),
        (Some(TOKEN_A), body(&id, "-1", "k"), 422, "invalid_value"),
        (Some(TOKEN_A), body(&id, "1.005", "k"), 422, "invalid_value"),
        (
            Some(TOKEN_A),
            body(&id, "\"NaN\"", "k"),
            422,
            "invalid_value",
        ),
        (
            Some(TOKEN_A),
            format!(r#"{{"call_id":"{id}","value":1,"key":"k"}}"#),
            400,
            "bad_request",
        ),
        (Some(TOKEN_A), "{not json".to_string(), 400, "bad_request"),
        (
            Some(TOKEN_A),
            format!(
                r#"{{"call_id":"{id}","event":"sale","value":1,"key":"{}"}}"#,
                "k".repeat(2000)
            ),
            413,
            "too_large",
        ),
    ];
    for (token, body, want, code) in cases {
        let (status, json) = post(&http, &base, token, body.clone()).await;
        assert_eq!(status, want, "{body:.80}: {json}");
        assert_eq!(json["error"], code, "{json}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let stored: i64 = client
        .query_one("SELECT count(*) FROM conversions", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 2, "refused reports stored nothing");
    running.shutdown();
    running.stopped().await;
}

#[tokio::test]
async fn postbacks_retry_until_delivered_and_every_attempt_is_recorded() {
    let db = TestDb::migrated().await;
    let (receiver, addr) = Receiver::start(2).await;
    db.apply_catalog(&catalog(addr)).await;
    let record = call(
        Utc::now() - chrono::Duration::minutes(1),
        "auto",
        "pub-acme",
        "search & co",
        vec![
            bid("buyer-a", BidStatus::Bid, Some(1250), None),
            bid("buyer-b", BidStatus::Bid, Some(1000), None),
        ],
        Some(("buyer-a", 1001)),
        95,
        400,
        20_000,
    );
    assert_eq!(insert(&db, std::slice::from_ref(&record)).await, 1);
    // A journal replay of the same record enqueues nothing new.
    assert_eq!(insert(&db, std::slice::from_ref(&record)).await, 0);
    let client = db.client().await;
    let rows = client
        .query("SELECT kind, url FROM postbacks ORDER BY kind", &[])
        .await
        .expect("rows");
    let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let call_id = record.call_id;
    assert_eq!(
        got,
        vec![
            (
                "buyer_billing".into(),
                format!("http://{addr}/a/bill?c={call_id}&p=10.01")
            ),
            (
                "buyer_loss".into(),
                format!("http://{addr}/always-fail/b/loss?c={call_id}&r=outbid")
            ),
            (
                "buyer_win".into(),
                format!("http://{addr}/a/win?c={call_id}&p=10.01")
            ),
            (
                "publisher_payable".into(),
                format!(
                    "http://{addr}/pub?call={call_id}&src=search%20%26%20co&payout=4.00&d=95&ev=&v="
                )
            ),
        ]
    );

    let journal = tempfile::tempdir().expect("tmp");
    let (running, base) = start_daemon(&db, journal.path(), |c| {
        c.postbacks.initial_backoff_ms = 100;
        c.postbacks.max_backoff_ms = 200;
        c.postbacks.max_attempts = 3;
        c.postbacks.poll_interval_ms = 20;
        c.postbacks.timeout_ms = 2_000;
    })
    .await;
    let settled = eventually(Duration::from_secs(20), || {
        let db = &db;
        async move {
            let c = db.client().await;
            let pending: i64 = c
                .query_one(
                    "SELECT count(*) FROM postbacks WHERE delivered_at IS NULL AND failed_at IS NULL",
                    &[],
                )
                .await
                .expect("pending")
                .get(0);
            pending == 0
        }
    })
    .await;
    assert!(settled, "postbacks never settled: {:?}", receiver.hits());
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        r#"bidbridge_postback_attempts_total{kind="buyer_loss",result="failed"} 1"#,
        r#"bidbridge_postback_attempts_total{kind="buyer_win",result="retry"} 2"#,
        r#"bidbridge_postback_attempts_total{kind="buyer_win",result="delivered"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    running.shutdown();
    running.stopped().await;

    let rows = client
        .query(
            "SELECT p.kind, p.attempts, p.last_status, p.delivered_at IS NOT NULL, p.failed_at IS NOT NULL,
                    array_agg(a.status ORDER BY a.attempt), bool_and(a.latency_ms >= 0)
             FROM postbacks p JOIN postback_attempts a ON a.postback_id = p.id
             GROUP BY p.id ORDER BY p.kind",
            &[],
        )
        .await
        .expect("attempts");
    for row in &rows {
        let kind: String = row.get(0);
        let attempts: i32 = row.get(1);
        let last: Option<i32> = row.get(2);
        let delivered: bool = row.get(3);
        let failed: bool = row.get(4);
        let statuses: Vec<Option<i32>> = row.get(5);
        assert_eq!(attempts, 3, "{kind}");
        assert_eq!(statuses.len(), 3, "{kind}: every attempt recorded");
        assert!(row.get::<_, bool>(6));
        if kind == "buyer_loss" {
            // Never accepted: given up after max_attempts, marked failed.
            assert!(failed && !delivered, "{kind}");
            assert_eq!(statuses, vec![Some(500); 3]);
        } else {
            assert!(delivered && !failed, "{kind}");
            assert_eq!(last, Some(200));
            assert_eq!(statuses, vec![Some(500), Some(500), Some(200)], "{kind}");
        }
    }
    assert_eq!(rows.len(), 4);
    // Delivered exactly once each: one 200 per URL at the receiver.
    let hits = receiver.hits();
    for (_, url) in got.iter().filter(|(k, _)| k != "buyer_loss") {
        let path = url.trim_start_matches(&format!("http://{addr}"));
        let ok = hits.iter().filter(|(p, s)| p == path && *s == 200).count();
        assert_eq!(ok, 1, "{path}: {hits:?}");
    }
}

/// A fixed set of calls in the last hours, plus conversions.
fn sample(now: DateTime<Utc>) -> Vec<CallRecord> {
    let ago = |m: i64| now - chrono::Duration::minutes(m);
    vec![
        call(
            ago(10),
            "auto",
            "pub-acme",
            "search",
            vec![
                bid("buyer-a", BidStatus::Bid, Some(1250), None),
                bid("buyer-b", BidStatus::Bid, Some(1001), None),
            ],
            Some(("buyer-a", 1002)),
            95,
            400,
            12_000,
        ),
        call(
            ago(20),
            "auto",
            "pub-acme",
            "social",
            vec![
                bid("buyer-a", BidStatus::Bid, Some(1333), None),
                bid("buyer-b", BidStatus::NoBid, None, Some("no capacity")),
            ],
            Some(("buyer-a", 1333)),
            30,
            400,
            40_000,
        ),
        call(
            ago(70),
            "home",
            "pub-zeta",
            "search",
            vec![
                bid("buyer-b", BidStatus::Bid, Some(777), None),
                bid("buyer-a", BidStatus::Timeout, None, None),
            ],
            Some(("buyer-b", 777)),
            61,
            311,
            90_000,
        ),
        call(
            ago(130),
            "home",
            "pub-zeta",
            "",
            vec![
                bid("buyer-a", BidStatus::NoBid, None, Some("no capacity")),
                bid("buyer-b", BidStatus::BelowFloor, Some(100), None),
            ],
            None,
            0,
            0,
            55_000,
        ),
        call(
            ago(170),
            "auto",
            "pub-zeta",
            "search",
            vec![bid("buyer-b", BidStatus::Bid, Some(2099), None)],
            Some(("buyer-b", 2099)),
            300,
            1050,
            7_000,
        ),
        // Outside a 3h window.
        call(
            ago(60 * 30),
            "auto",
            "pub-acme",
            "search",
            vec![bid("buyer-a", BidStatus::Bid, Some(5000), None)],
            Some(("buyer-a", 5000)),
            120,
            2000,
            1_000,
        ),
    ]
}

#[tokio::test]
async fn report_totals_equal_sums_over_the_raw_rows() {
    let db = TestDb::migrated().await;
    let now = Utc::now();
    let records = sample(now);
    insert(&db, &records).await;
    let client = db.client().await;
    for (i, r) in records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.winner.is_some())
    {
        client
            .execute(
                "INSERT INTO conversions (call_id, buyer_id, event, value_cents, idempotency_key)
                 VALUES ($1, $2, 'sale', $3, $4)",
                &[
                    &r.call_id,
                    &r.winner.as_ref().map(|w| w.buyer_id.clone()),
                    &(1999 + i as i64),
                    &format!("k{i}"),
                ],
            )
            .await
            .expect("conversion");
    }
    let since = now - chrono::Duration::hours(3);
    let until = now + chrono::Duration::seconds(1);

    // Independent sums straight from the rows.
    let expect = client
        .query_one(
            "SELECT count(*), count(winner_buyer_id), count(*) FILTER (WHERE payable),
                    sum(revenue_cents)::bigint, sum(payout_cents)::bigint,
                    (SELECT count(*) FROM conversions v JOIN calls c USING (call_id) WHERE c.arrived_at >= $1),
                    (SELECT sum(value_cents)::bigint FROM conversions v JOIN calls c USING (call_id) WHERE c.arrived_at >= $1),
                    (SELECT count(*) FROM bids b JOIN calls c USING (call_id) WHERE c.arrived_at >= $1 AND status = 'bid'),
                    (SELECT sum(price_cents)::bigint FROM bids b JOIN calls c USING (call_id) WHERE c.arrived_at >= $1 AND status = 'bid')
             FROM calls WHERE arrived_at >= $1",
            &[&since],
        )
        .await
        .expect("sums");
    let (calls, answered, payable): (i64, i64, i64) = (expect.get(0), expect.get(1), expect.get(2));
    let (revenue, payout): (i64, i64) = (expect.get(3), expect.get(4));
    let (conversions, conversion_value): (i64, i64) = (expect.get(5), expect.get(6));
    let (bids, bid_sum): (i64, i64) = (expect.get(7), expect.get(8));
    assert_eq!((calls, answered, payable), (5, 4, 3), "the sample itself");

    for by in [
        GroupBy::Campaign,
        GroupBy::Buyer,
        GroupBy::Destination,
        GroupBy::Publisher,
        GroupBy::Source,
        GroupBy::Hour,
    ] {
        let report = report::build(&client, by, since, until)
            .await
            .expect("report");
        let t = &report.total;
        assert_eq!(t.calls, calls, "{by:?}");
        assert_eq!(t.answered, answered, "{by:?}");
        assert_eq!(t.payable, payable, "{by:?}");
        assert_eq!(t.revenue, Cents(revenue), "{by:?}");
        assert_eq!(t.payout, Cents(payout), "{by:?}");
        assert_eq!(t.margin, Cents(revenue - payout), "{by:?}");
        assert_eq!(t.conversions, conversions, "{by:?}");
        assert_eq!(t.conversion_value, Cents(conversion_value), "{by:?}");
        assert_eq!(t.bids, bids, "{by:?}");
        assert_eq!(t.bid_total, Cents(bid_sum), "{by:?}");
        // The groups add up to the total, to the cent.
        let sum = |f: fn(&report::GroupRow) -> i64| report.rows.iter().map(f).sum::<i64>();
        assert_eq!(sum(|g| g.calls), calls, "{by:?}");
        assert_eq!(sum(|g| g.payable), payable, "{by:?}");
        assert_eq!(sum(|g| g.revenue.0), revenue, "{by:?}");
        assert_eq!(sum(|g| g.payout.0), payout, "{by:?}");
        assert_eq!(sum(|g| g.conversion_value.0), conversion_value, "{by:?}");
        assert_eq!(sum(|g| g.bids), bids, "{by:?}");
        assert_eq!(sum(|g| g.bid_total.0), bid_sum, "{by:?}");
    }

    // One group checked by hand: campaign auto in the window = calls 1, 2, 5.
    let report = report::build(&client, GroupBy::Campaign, since, until)
        .await
        .expect("report");
    let auto = report
        .rows
        .iter()
        .find(|g| g.key == "auto")
        .expect("auto group");
    assert_eq!((auto.calls, auto.answered, auto.payable), (3, 3, 2));
    assert_eq!(auto.revenue, Cents(1002 + 2099));
    assert_eq!(auto.payout, Cents(400 + 1050));
    assert_eq!(auto.revenue_per_call(), Cents(1034)); // 3101 / 3 = 1033.67
    assert_eq!(auto.average_bid(), Some(Cents(1421))); // (1250+1001+1333+2099)/4 = 1420.75
    assert_eq!(auto.auction_p50_us, Some(12_000.0));
    let home = report.rows.iter().find(|g| g.key == "home").expect("home");
    assert_eq!(
        home.no_bid_reasons.first(),
        Some(&("below_floor".to_string(), 1))
    );
    let buyers = report::build(&client, GroupBy::Buyer, since, until)
        .await
        .expect("report");
    let b = buyers.rows.iter().find(|g| g.key == "buyer-b").expect("b");
    assert_eq!(
        b.no_bid_reasons,
        vec![
            ("below_floor".to_string(), 1),
            ("no_bid: no capacity".to_string(), 1)
        ]
    );
    // Money in CSV is exact text.
    let csv = report.render(report::Format::Csv);
    let total_line = csv.lines().last().expect("total line");
    assert!(
        total_line.starts_with(&format!(
            "TOTAL,5,4,3,80.0%,60.0%,{conversions},{}",
            Cents(conversion_value)
        )),
        "{total_line}"
    );
    assert!(total_line.contains(&Cents(revenue).to_string()), "{csv}");
}

#[tokio::test]
async fn http_reports_need_the_admin_token() {
    let db = TestDb::migrated().await;
    let (_receiver, addr) = Receiver::start(0).await;
    db.apply_catalog(&catalog(addr)).await;
    let now = Utc::now();
    insert(&db, &sample(now)).await;
    let journal = tempfile::tempdir().expect("tmp");
    let (running, base) = start_daemon(&db, journal.path(), |c| c.postbacks.enabled = false).await;
    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut r = http.get(format!("{base}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(
        get("/v1/reports/campaign?since=3h", None)
            .await
            .expect("get")
            .status(),
        401
    );
    assert_eq!(
        get("/v1/reports/campaign?since=3h", Some(TOKEN_A))
            .await
            .expect("get")
            .status(),
        401
    );
    let response = get("/v1/reports/campaign?since=3h", Some(ADMIN))
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    let json: serde_json::Value = response.json().await.expect("json");
    assert_eq!(json["total"]["calls"], 5);
    // Payable calls only: 10.02 + 7.77 + 20.99.
    assert_eq!(json["total"]["revenue"], "38.78");
    assert_eq!(json["total"]["revenue_cents"], 3878);
    let csv = get("/v1/reports/hour?since=3h&format=csv", Some(ADMIN))
        .await
        .expect("get");
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/csv")
    );
    assert!(csv.text().await.expect("text").starts_with("group,calls,"));
    for (path, want) in [
        ("/v1/reports/campaign?since=yesterday", 400),
        ("/v1/reports/everything?since=3h", 404),
        ("/v1/reports/campaign?format=xml", 400),
    ] {
        let status = get(path, Some(ADMIN)).await.expect("get").status();
        assert_eq!(status, want, "{path}");
    }
    let calls: serde_json::Value = get("/v1/reports/calls?last=2", Some(ADMIN))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(calls["calls"].as_array().map(Vec::len), Some(2));
    assert_eq!(calls["calls"][1]["area_code"], "312");
    running.shutdown();
    running.stopped().await;
}

#[tokio::test]
async fn report_cli_prints_exact_money_and_recent_calls() {
    let db = TestDb::migrated().await;
    insert(&db, &sample(Utc::now())).await;
    let dir = tempfile::tempdir().expect("tmp");
    let json_path = dir.path().join("calls.json");
    let run = |args: &[&str]| {
        std::process::Command::new(common::binary())
            .args(args)
            .env("BIDBRIDGE_DATABASE_URL", &db.config.url)
            .env("BIDBRIDGE_CONFIG", dir.path().join("none.toml"))
            .output()
            .expect("run bidbridge")
    };
    std::fs::write(dir.path().join("none.toml"), "").expect("config");
    let out = run(&[
        "report",
        "--by",
        "publisher",
        "--since",
        "3h",
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\npub-acme,2,2,1,"), "{text}");
    assert!(text.contains("TOTAL,5,4,3,"), "{text}");

    let out = run(&[
        "report",
        "calls",
        "--last",
        "3",
        "--json",
        json_path.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.contains("buyer-a:12.50/bid"), "{text}");
    assert!(text.contains("buyer-a-main:answered(3.4s)"), "{text}");
    assert!(
        !text.contains("5550123"),
        "the caller's number never shows: {text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("json")).expect("parse");
    assert_eq!(json.as_array().map(Vec::len), Some(3));

    let out = run(&["report", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
