//! Consent, do-not-call, opt-out and the sharing log through the real
//! daemon: the FreeSWITCH simulator places the calls, loopback buyers keep
//! the raw bytes of every ping, the store is a real PostgreSQL.

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
        delay_ms: 2,
        dialect: None,
        min_talk_secs: None,
        latency: None,
    })
    .await
    .expect("buyer server")
}

/// A buyer: (id, ping URL, leg, allow_caller_number, campaign).
type Dest<'a> = (&'a str, String, &'a str, bool, &'a str);

fn catalog(extra_campaign: &str, destinations: &[Dest<'_>]) -> String {
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
floor = "1.00"
auction_deadline_ms = 300
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

[[campaigns]]
id = "other"
name = "Other"
vertical = "insurance.home"

[[numbers]]
number = "+18005550100"
campaign = "auto"
publisher = "pub"
source = "search"
"#
    );
    for (id, url, leg, allow, campaign) in destinations {
        text.push_str(&format!(
            "\n[[buyers]]\nid = \"{id}\"\nname = \"{id}\"\nallow_caller_number = {allow}\n\n[[buyers.destinations]]\nid = \"{id}\"\ncampaigns = [\"{campaign}\"]\nping = {{ url = \"{url}\" }}\ndial = {{ sip = \"sip:{leg}@127.0.0.1:5090\" }}\nring_timeout_secs = 20\n"
        ));
    }
    text
}

const LEGS: &str = r#"
[[legs]]
match = "leg-answer"
behaviour = "answer"
ring_secs = 2.0
talk_secs = 90.0

[[legs]]
match = "backup"
behaviour = "answer"
ring_secs = 1.0
talk_secs = 30.0
"#;

/// `calls` calls from +13125550100, +13125550101, ...
fn scenario(calls: u32, callers: &str) -> Scenario {
    let text = format!(
        "[run]\ncalls = {calls}\nrate_per_sec = 5\ntime_scale = 0.01\ntracking_number = \"+18005550100\"\ncaller_base = \"+13125550100\"\n{callers}\n{LEGS}"
    );
    Scenario::parse(&text).expect("scenario")
}

struct Daemon {
    db: TestDb,
    running: bidbridge::server::Running,
    _journal: tempfile::TempDir,
}

async fn daemon(catalog_toml: &str, dnc: &[&str]) -> Daemon {
    let db = TestDb::migrated().await;
    db.apply_catalog(catalog_toml).await;
    if !dnc.is_empty() {
        let entries: Vec<_> = dnc
            .iter()
            .map(|n| bidbridge::compliance::dnc::DncEntry {
                number: n.to_string(),
                source: "test".into(),
                added_at: chrono::Utc::now(),
            })
            .collect();
        bidbridge::compliance::dnc::insert(&db.client().await, &entries)
            .await
            .expect("dnc insert");
    }
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
    async fn call(&self, scenario: &Scenario) {
        let report =
            bidbridge::simulate::run_freeswitch(self.running.esl_addr.unwrap(), scenario).await;
        assert_eq!(report.failed, 0, "simulated calls failed: {report:#?}");
    }

    /// Waits for `n` call records, oldest first (by caller, which the
    /// scenario numbers in call order).
    async fn calls(&self, n: usize) -> Vec<tokio_postgres::Row> {
        let client = self.db.client().await;
        for _ in 0..200 {
            let rows = client
                .query("SELECT * FROM calls ORDER BY caller, arrived_at", &[])
                .await
                .unwrap();
            if rows.len() >= n {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {n} call records");
    }

    async fn sharing(&self, caller: &str) -> Vec<bidbridge::compliance::sharing::SharingRow> {
        let client = self.db.client().await;
        let number = bidbridge::phone::E164::parse_strict(caller).unwrap();
        bidbridge::compliance::sharing::for_caller(&client, &number)
            .await
            .unwrap()
    }
}

/// Every spelling of a NANP number a ping might carry.
fn spellings(e164: &str) -> Vec<String> {
    let d = e164.trim_start_matches('+');
    let national = &d[1..];
    vec![
        e164.to_string(),
        d.to_string(),
        national.to_string(),
        format!("{}-{}-{}", &national[..3], &national[3..6], &national[6..]),
        format!(
            "({}) {}-{}",
            &national[..3],
            &national[3..6],
            &national[6..]
        ),
        format!("{}.{}.{}", &national[..3], &national[3..6], &national[6..]),
        format!("+1 {}", national),
    ]
}

fn contains_number(body: &[u8], e164: &str) -> bool {
    let text = String::from_utf8_lossy(body);
    spellings(e164).iter().any(|s| text.contains(s.as_str()))
}

/// Which caller (of `callers`) each raw ping is about, by the caller's
/// number hash would need the key; instead pings are matched to calls by
/// order: the scenario places calls one after another.
#[tokio::test]
async fn caller_number_reaches_only_allowed_buyers_with_consent() {
    let (allowed, denied) = (buyer("20.00").await, buyer("10.00").await);
    let d = daemon(
        &catalog(
            "",
            &[
                ("allowed", allowed.url(), "leg-answer", true, "auto"),
                ("denied", denied.url(), "leg-answer", false, "auto"),
            ],
        ),
        &[],
    )
    .await;
    // Call 0: no consent. Call 1: consent headers from the publisher.
    // Call 2: IVR caller without headers, no consent either.
    let callers = r#"
[[callers]]
dtmf = ["1", "60601"]

[[callers]]
dtmf = ["1", "60601"]
variables = { "sip_h_X-Consent-Id" = "c-777", "sip_h_X-TrustedForm-Cert" = "https://cert.trustedform.com/0123abcd", "sip_h_X-Consent-Time" = "2026-01-02T03:04:05Z", "sip_h_X-Consent-Page" = "https://quotes.example/auto" }

[[callers]]
dtmf = ["1", "60601"]
"#;
    // One call at a time, so each buyer's n-th ping is about call n.
    for n in 0..3 {
        let mut s = scenario(1, callers);
        s.run.caller_base = format!("+1312555010{n}");
        s.callers = vec![s.callers[n].clone()];
        d.call(&s).await;
        let _ = d.calls(n + 1).await;
    }
    let calls = d.calls(3).await;
    let numbers = ["+13125550100", "+13125550101", "+13125550102"];
    let (a, b) = (allowed.requests(), denied.requests());
    assert_eq!(a.len(), 3, "the allowed buyer is pinged once per call");
    assert_eq!(b.len(), 3);
    for (n, number) in numbers.iter().enumerate() {
        let consent = n == 1;
        for (i, other) in numbers.iter().enumerate() {
            if i != n {
                assert!(!contains_number(&a[n], other) && !contains_number(&b[n], other));
            }
        }
        assert_eq!(
            contains_number(&a[n], number),
            consent,
            "allowed buyer, call {n}: {}",
            String::from_utf8_lossy(&a[n])
        );
        assert!(
            !contains_number(&b[n], number),
            "denied buyer got the number on call {n}: {}",
            String::from_utf8_lossy(&b[n])
        );
    }
    // The consent evidence is on the record.
    let client = d.db.client().await;
    let id: uuid::Uuid = calls[1].get("call_id");
    let consents = client
        .query(
            "SELECT kind, reference, page, consented_at FROM consent_records WHERE call_id = $1 ORDER BY seq",
            &[&id],
        )
        .await
        .unwrap();
    let kinds: Vec<(String, Option<String>)> =
        consents.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        kinds,
        vec![
            ("sip_header".into(), Some("c-777".into())),
            (
                "trustedform".into(),
                Some("https://cert.trustedform.com/0123abcd".into())
            ),
        ]
    );
    assert_eq!(
        consents[0].get::<_, Option<String>>(2).as_deref(),
        Some("https://quotes.example/auto")
    );
    // The sharing log says the same: `number` only to the allowed buyer,
    // with consent, on call 1.
    for (n, number) in numbers.iter().enumerate() {
        let rows = d.sharing(number).await;
        let pings: Vec<_> = rows.iter().filter(|r| r.channel == "ping").collect();
        assert_eq!(pings.len(), 2, "{rows:#?}");
        for p in &pings {
            let has_number = p.fields.iter().any(|f| f == "number");
            assert_eq!(has_number, n == 1 && p.party_id == "allowed", "{p:?}");
            assert!(p.fields.iter().any(|f| f == "tag.zip"));
            assert_eq!(p.consent.is_some(), n == 1, "{p:?}");
        }
        if n == 1 {
            assert_eq!(pings[0].consent.as_deref(), Some("sip_header:c-777"));
        }
    }
    d.running.shutdown();
}

#[tokio::test]
async fn sharing_report_lists_exactly_the_buyers_that_got_the_data() {
    let (a, b, c) = (
        buyer("20.00").await,
        buyer("10.00").await,
        buyer("30.00").await,
    );
    let d = daemon(
        &catalog(
            "",
            &[
                ("acme", a.url(), "leg-answer", false, "auto"),
                ("bravo", b.url(), "leg-answer", false, "auto"),
                // Another campaign: never hears of this call.
                ("carol", c.url(), "leg-answer", true, "other"),
            ],
        ),
        &[],
    )
    .await;
    d.call(&scenario(1, "[[callers]]\ndtmf = [\"1\", \"60601\"]\n"))
        .await;
    let calls = d.calls(1).await;
    assert_eq!(calls[0].get::<_, String>("disposition"), "sold");
    assert_eq!(c.request_count(), 0);
    let rows = d.sharing("+13125550100").await;
    let parties = bidbridge::compliance::sharing::parties(&rows);
    assert!(
        parties.iter().all(|(kind, _)| kind == "buyer"),
        "{parties:?}"
    );
    let mut ids: Vec<&str> = parties.iter().map(|(_, id)| id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["acme", "bravo"], "{rows:#?}");
    // acme won: pinged, then bridged (caller ID presented).
    assert!(
        rows.iter()
            .any(|r| r.channel == "bridge" && r.party_id == "acme")
    );
    // The CLI answers the same question in one command.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bidbridge.toml");
    std::fs::write(
        &config,
        format!("[database]\nurl = {:?}\n", d.db.config.url),
    )
    .unwrap();
    let out = std::process::Command::new(common::binary())
        .args(["sharing", "--caller", "(312) 555-0100", "--config"])
        .arg(&config)
        .output()
        .expect("run bidbridge sharing");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("went to 2 part(ies)"), "{text}");
    assert!(text.contains("buyer acme") && text.contains("buyer bravo") && !text.contains("carol"));
    // The same answer under the issue's spelling: report --sharing --caller.
    let again = std::process::Command::new(common::binary())
        .args([
            "report",
            "--sharing",
            "--caller",
            "+13125550100",
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("run bidbridge report --sharing");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&again.stdout), text);
    d.running.shutdown();
}

#[tokio::test]
async fn dnc_caller_is_rejected_at_screen_and_never_pinged() {
    let a = buyer("20.00").await;
    let d = daemon(
        &catalog("", &[("acme", a.url(), "leg-answer", true, "auto")]),
        &["+13125550100"],
    )
    .await;
    d.call(&scenario(
        1,
        "[[callers]]\ndtmf = [\"1\", \"60601\"]\nvariables = { \"sip_h_X-Consent-Id\" = \"c-1\" }\n",
    ))
    .await;
    let calls = d.calls(1).await;
    assert_eq!(calls[0].get::<_, String>("disposition"), "rejected");
    assert_eq!(calls[0].get::<_, String>("stage_reached"), "screen");
    assert_eq!(a.request_count(), 0);
    assert!(d.sharing("+13125550100").await.is_empty());
    d.running.shutdown();
}

#[tokio::test]
async fn opt_out_key_works_mid_ivr_and_the_caller_is_never_pinged_again() {
    let a = buyer("20.00").await;
    let d = daemon(
        &catalog(
            "opt_out_key = \"9\"\nopt_out_prompt = \"goodbye\"\n",
            &[("acme", a.url(), "leg-answer", true, "auto")],
        ),
        &[],
    )
    .await;
    // Product menu answered, then 9 at the ZIP entry.
    d.call(&scenario(1, "[[callers]]\ndtmf = [\"1\", \"9\"]\n"))
        .await;
    let calls = d.calls(1).await;
    assert_eq!(calls[0].get::<_, String>("disposition"), "rejected");
    assert_eq!(
        calls[0].get::<_, serde_json::Value>("ivr_path"),
        serde_json::json!([["product", "1"], ["zip", "opt_out"]])
    );
    assert_eq!(a.request_count(), 0);
    let client = d.db.client().await;
    let source: String = client
        .query_one("SELECT source FROM dnc WHERE number = '+13125550100'", &[])
        .await
        .expect("opted-out caller is on the DNC list")
        .get(0);
    assert_eq!(source, "ivr opt-out");
    // Calling again: refused at screening, still never pinged.
    d.call(&scenario(1, "[[callers]]\ndtmf = [\"1\", \"60601\"]\n"))
        .await;
    let calls = d.calls(2).await;
    assert_eq!(calls[1].get::<_, String>("stage_reached"), "screen");
    assert_eq!(a.request_count(), 0);
    // Another caller still reaches the buyer: the key did not break the IVR.
    let mut other = scenario(1, "[[callers]]\ndtmf = [\"1\", \"90210\"]\n");
    other.run.caller_base = "+13125550199".into();
    d.call(&other).await;
    let calls = d.calls(3).await;
    assert_eq!(calls[2].get::<_, String>("disposition"), "sold");
    assert_eq!(a.request_count(), 1);
    d.running.shutdown();
}

#[tokio::test]
async fn require_consent_without_consent_sends_no_pings_and_goes_to_backup() {
    let a = buyer("20.00").await;
    let d = daemon(
        &catalog(
            "require_consent = true\n",
            &[("acme", a.url(), "leg-answer", true, "auto")],
        ),
        &[],
    )
    .await;
    d.call(&scenario(1, "[[callers]]\ndtmf = [\"1\", \"60601\"]\n"))
        .await;
    let calls = d.calls(1).await;
    assert_eq!(calls[0].get::<_, String>("disposition"), "backup");
    assert_eq!(a.request_count(), 0);
    let rows = d.sharing("+13125550100").await;
    assert!(
        rows.iter()
            .all(|r| r.channel == "bridge" && r.party_kind == "operator"),
        "{rows:#?}"
    );
    d.running.shutdown();
}

#[tokio::test]
async fn ivr_consent_step_records_prompt_key_and_time() {
    let a = buyer("20.00").await;
    let d = daemon(
        &catalog(
            "require_consent = true\nconsent_prompt = \"consent-to-share\"\nconsent_key = \"1\"\nopt_out_key = \"9\"\n",
            &[("acme", a.url(), "leg-answer", true, "auto")],
        ),
        &[],
    )
    .await;
    d.call(&scenario(
        1,
        "[[callers]]\ndtmf = [\"1\", \"60601\", \"1\"]\n",
    ))
    .await;
    let calls = d.calls(1).await;
    assert_eq!(calls[0].get::<_, String>("disposition"), "sold");
    let id: uuid::Uuid = calls[0].get("call_id");
    let client = d.db.client().await;
    let row = client
        .query_one(
            "SELECT kind, prompt, key_pressed, consented_at FROM consent_records WHERE call_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ivr");
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("consent-to-share")
    );
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("1"));
    assert!(
        row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(3)
            .is_some()
    );
    let pings = a.requests();
    assert_eq!(pings.len(), 1);
    assert!(contains_number(&pings[0], "+13125550100"));
    d.running.shutdown();
}

#[tokio::test]
async fn require_consent_static_only_pings_nobody_and_sells_to_a_static_price() {
    let a = buyer("50.00").await;
    let mut text = catalog(
        "require_consent = true\nwithout_consent = \"static_only\"\n",
        &[("pinged", a.url(), "leg-answer", true, "auto")],
    );
    text.push_str(
        "\n[[buyers]]\nid = \"fixed\"\nname = \"fixed\"\n\n[[buyers.destinations]]\nid = \"fixed\"\ncampaigns = [\"auto\"]\nstatic_price = \"9.00\"\ndial = { sip = \"sip:leg-answer@127.0.0.1:5090\" }\nring_timeout_secs = 20\n",
    );
    let d = daemon(&text, &[]).await;
    d.call(&scenario(1, "[[callers]]\ndtmf = [\"1\", \"60601\"]\n"))
        .await;
    let calls = d.calls(1).await;
    assert_eq!(calls[0].get::<_, String>("disposition"), "sold");
    assert_eq!(
        calls[0]
            .get::<_, Option<String>>("winner_destination_id")
            .as_deref(),
        Some("fixed")
    );
    assert_eq!(a.request_count(), 0);
    let rows = d.sharing("+13125550100").await;
    assert!(rows.iter().all(|r| r.channel != "ping"), "{rows:#?}");
    assert!(
        rows.iter()
            .any(|r| r.channel == "bridge" && r.party_id == "fixed")
    );
    d.running.shutdown();
}

/// The writer's side: sharing rows (the record's and its notices'), the
/// opt-out's DNC row and the `{consent_id}` template field, written once even
/// when the batch is replayed.
#[tokio::test]
async fn sharing_rows_and_opt_outs_are_written_once_with_the_record() {
    let db = TestDb::migrated().await;
    db.apply_catalog(&catalog(
        "",
        &[(
            "acme",
            "http://127.0.0.1:9/ping".into(),
            "leg-answer",
            false,
            "auto",
        )],
    ))
    .await;
    let mut client = db.client().await;
    client
        .execute(
            "UPDATE buyers SET win_url = 'http://127.0.0.1:9/win?c={call_id}&consent={consent_id}' WHERE id = 'acme'",
            &[],
        )
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let id = uuid::Uuid::new_v4();
    let record: bidbridge::ledger::record::CallRecord = serde_json::from_value(serde_json::json!({
        "call_id": id, "node_id": "n1", "pbx": "freeswitch", "channel_id": "ch",
        "caller": "+13125550177", "caller_raw": "+13125550177", "tracking_number": "+18005550100",
        "campaign_id": "auto", "publisher_id": "pub", "source": "search",
        "disposition": "sold", "stage_reached": "settled",
        "times": {"arrived_at": now, "ended_at": now},
        "ivr_tags": {}, "ivr_path": [], "bids": [], "attempts": [],
        "winner": {"buyer_id": "acme", "destination_id": "acme", "bid_id": null,
                   "price_bid": "20.00", "price_charged": "20.00"},
        "currency": "USD", "talk_ms": 90000, "min_talk_secs": 60, "payable": false,
        "payable_reason": "test", "revenue": "0", "payout": "0",
        "hangup_cause": null, "hung_up_by": null, "recording_path": null, "auction_us": null,
        "consents": [{"kind": "sip_header", "reference": "c-777", "prompt": null, "key_pressed": null,
                      "page": null, "consented_at": null, "captured_at": now}],
        "sharing": [{"channel": "ping", "party_kind": "buyer", "party_id": "acme",
                     "destination_id": "acme", "fields": ["area_code", "number_hash"],
                     "consent_seq": 0, "shared_at": now}],
        "opted_out": {"node": "zip", "at": now},
        "notes": []
    }))
    .expect("record");
    let records = vec![record];
    assert_eq!(
        bidbridge::ledger::store::insert_batch(&mut client, &records)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        bidbridge::ledger::store::insert_batch(&mut client, &records)
            .await
            .unwrap(),
        0
    );
    let number = bidbridge::phone::E164::parse_strict("+13125550177").unwrap();
    let rows = bidbridge::compliance::sharing::for_caller(&client, &number)
        .await
        .unwrap();
    let summary: Vec<(&str, &str, Vec<String>, Option<&str>)> = rows
        .iter()
        .map(|r| {
            (
                r.channel.as_str(),
                r.party_id.as_str(),
                r.fields.clone(),
                r.consent.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "ping",
                "acme",
                vec!["area_code".to_string(), "number_hash".to_string()],
                Some("sip_header:c-777")
            ),
            (
                "notice",
                "acme",
                vec!["call_id".to_string(), "consent_id".to_string()],
                Some("sip_header:c-777")
            ),
        ]
    );
    let url: String = client
        .query_one("SELECT url FROM postbacks WHERE call_id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert!(url.ends_with("&consent=c-777"), "{url}");
    let source: String = client
        .query_one("SELECT source FROM dnc WHERE number = '+13125550177'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(source, "ivr opt-out");
}

/// `GET /v1/calls/{id}` returns the consent evidence and logs the read;
/// `/v1/dnc` adds, lists and removes.
#[tokio::test]
async fn admin_api_logs_record_reads_and_manages_the_dnc_list() {
    let a = buyer("20.00").await;
    let db = TestDb::migrated().await;
    db.apply_catalog(&catalog(
        "",
        &[("acme", a.url(), "leg-answer", false, "auto")],
    ))
    .await;
    let journal = tempfile::tempdir().unwrap();
    let mut config = test_config(&db, journal.path());
    config.http.admin_token_sha256 = Some(bidbridge::api::auth::hash_token("secret"));
    let running = bidbridge::server::start(config).await.expect("daemon");
    let catalog_cache = running.services.catalog.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            catalog_cache.is_loaded()
        })
        .await
    );
    let d = Daemon {
        db,
        running,
        _journal: journal,
    };
    d.call(&scenario(
        1,
        "[[callers]]\ndtmf = [\"1\", \"60601\"]\nvariables = { \"sip_h_X-LeadiD\" = \"ABCD-1234\" }\n",
    ))
    .await;
    let calls = d.calls(1).await;
    let id: uuid::Uuid = calls[0].get("call_id");
    let base = format!("http://{}", d.running.http_addr.unwrap());
    let http = reqwest::Client::new();
    let before = d.sharing("+13125550100").await.len();
    let body: serde_json::Value = http
        .get(format!("{base}/v1/calls/{id}"))
        .bearer_auth("secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["consent_id"], "ABCD-1234");
    assert_eq!(body["consents"][0]["kind"], "jornaya");
    let after = d.sharing("+13125550100").await;
    assert_eq!(after.len(), before + 1);
    let last = after.last().unwrap();
    assert_eq!(
        (last.channel.as_str(), last.party_kind.as_str()),
        ("api", "admin")
    );
    assert_eq!(last.consent.as_deref(), Some("jornaya:ABCD-1234"));
    // Unauthenticated: refused.
    let status = http
        .get(format!("{base}/v1/dnc"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    let added = http
        .post(format!("{base}/v1/dnc"))
        .bearer_auth("secret")
        .body(r#"{"number": "(312) 555-0142", "source": "complaint"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let csv = http
        .get(format!("{base}/v1/dnc?format=csv"))
        .bearer_auth("secret")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.contains("+13125550142,complaint,"), "{csv}");
    // Every node's cache follows the table.
    let cache = d.running.services.catalog.clone();
    let number = bidbridge::phone::E164::parse_strict("+13125550142").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            cache.do_not_call(&number).is_some()
        })
        .await
    );
    let removed = http
        .delete(format!("{base}/v1/dnc/+13125550142"))
        .bearer_auth("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    assert!(
        eventually(Duration::from_secs(5), || async {
            cache.do_not_call(&number).is_none()
        })
        .await
    );
    d.running.shutdown();
}

/// The campaign's compliance fields survive apply → load (the catalog
/// document and its DB columns agree).
#[tokio::test]
async fn campaign_compliance_fields_round_trip_through_the_store() {
    let db = TestDb::migrated().await;
    let text = catalog(
        "consent_prompt = \"consent\"\nconsent_key = \"1\"\nrequire_consent = true\nwithout_consent = \"static_only\"\nopt_out_key = \"9\"\nopt_out_prompt = \"bye\"\n",
        &[(
            "acme",
            "http://127.0.0.1:9/ping".into(),
            "leg-answer",
            false,
            "auto",
        )],
    );
    db.apply_catalog(&text).await;
    let mut client = db.client().await;
    let loaded = bidbridge::catalog::store::load(&mut client).await.unwrap();
    let wanted = bidbridge::catalog::spec::CatalogDoc::parse(
        &text,
        bidbridge::catalog::spec::DocFormat::Toml,
    )
    .unwrap();
    let pick = |doc: &bidbridge::catalog::spec::CatalogDoc| {
        doc.campaigns
            .iter()
            .find(|c| c.id == "auto")
            .cloned()
            .unwrap()
    };
    let (got, want) = (pick(&loaded), pick(&wanted));
    assert_eq!(got.consent_prompt, want.consent_prompt);
    assert_eq!(got.consent_key.as_deref(), Some("1"));
    assert!(got.require_consent);
    assert_eq!(
        got.without_consent,
        bidbridge::catalog::spec::WithoutConsent::StaticOnly
    );
    assert_eq!(got.opt_out_key.as_deref(), Some("9"));
    assert_eq!(got.opt_out_prompt, want.opt_out_prompt);
    // Applying what was loaded changes nothing.
    let changes = bidbridge::catalog::store::apply(&mut client, &loaded, false, true)
        .await
        .unwrap();
    assert!(changes.iter().all(|c| !c.is_write()), "{changes:?}");
}

#[tokio::test]
async fn opt_out_key_works_at_the_consent_prompt_too() {
    let a = buyer("20.00").await;
    let d = daemon(
        &catalog(
            "consent_prompt = \"consent-to-share\"\nconsent_key = \"1\"\nopt_out_key = \"9\"\n",
            &[("acme", a.url(), "leg-answer", true, "auto")],
        ),
        &[],
    )
    .await;
    d.call(&scenario(
        1,
        "[[callers]]\ndtmf = [\"1\", \"60601\", \"9\"]\n",
    ))
    .await;
    let calls = d.calls(1).await;
    assert_eq!(calls[0].get::<_, String>("disposition"), "rejected");
    assert_eq!(
        calls[0].get::<_, serde_json::Value>("ivr_path"),
        serde_json::json!([["product", "1"], ["zip", "60601"], ["consent", "opt_out"]])
    );
    assert_eq!(a.request_count(), 0);
    let client = d.db.client().await;
    assert_eq!(
        client
            .query("SELECT 1 FROM dnc WHERE number = '+13125550100'", &[])
            .await
            .unwrap()
            .len(),
        1
    );
    d.running.shutdown();
}
