//! Retention purge, STIR/SHAKEN attestation rules and fraud signals,
//! against a real PostgreSQL (and, for attestation, the real daemon with
//! the FreeSWITCH simulator and a loopback buyer).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bidbridge::ledger::record::{
    AttemptKind, AttemptRecord, CallRecord, Disposition, Stage, StageTimes, Winner,
};
use bidbridge::money::Cents;
use bidbridge::pbx::{LegStatus, PbxKind};
use bidbridge::simulate::buyers;
use bidbridge::simulate::scenario::{BidBehaviour, BuyerSpec, Scenario};
use chrono::{DateTime, Utc};
use common::{TestDb, eventually, test_config};
use uuid::Uuid;

const CATALOG: &str = r#"
[[publishers]]
id = "pub"
name = "Publisher"
payout = { fixed = "4.00" }

[[campaigns]]
id = "auto"
name = "Auto"
vertical = "insurance.auto"
min_talk_secs = 60
retention_days = 30
recording_retention_days = 30
fraud_auto_block = true

[[campaigns]]
id = "home"
name = "Home"
vertical = "insurance.home"

[[numbers]]
number = "+18005550100"
campaign = "auto"
publisher = "pub"
source = "search"
"#;

/// A sold, payable call (or not) with `talk_secs` of talk.
fn record(
    campaign: &str,
    source: &str,
    caller: &str,
    arrived: DateTime<Utc>,
    talk_secs: u64,
    revenue: i64,
    recording: Option<String>,
) -> CallRecord {
    let payable = talk_secs >= 60;
    CallRecord {
        call_id: Uuid::new_v4(),
        node_id: "test-node".into(),
        pbx: PbxKind::Freeswitch,
        channel_id: Uuid::new_v4().to_string(),
        caller: Some(caller.into()),
        caller_raw: caller.into(),
        tracking_number: "+18005550100".into(),
        campaign_id: Some(campaign.into()),
        publisher_id: Some("pub".into()),
        source: Some(source.into()),
        disposition: Disposition::Sold,
        stage_reached: Stage::Settled,
        times: StageTimes {
            arrived_at: arrived,
            ended_at: arrived + chrono::Duration::seconds(talk_secs as i64 + 10),
            ..StageTimes::default()
        },
        ivr_tags: BTreeMap::new(),
        ivr_path: vec![],
        bids: vec![],
        attempts: vec![AttemptRecord {
            buyer_id: Some("b".into()),
            destination_id: Some("b-main".into()),
            kind: AttemptKind::Winner,
            target: "+13125559999 via carrier".into(),
            started_at: arrived,
            ring_ms: 2000,
            answered_at: Some(arrived),
            ended_at: Some(arrived),
            talk_ms: Some(talk_secs * 1000),
            outcome: Some(LegStatus::Answered),
            cause: None,
            detail: None,
            ended_by: None,
        }],
        winner: Some(Winner {
            buyer_id: "b".into(),
            destination_id: "b-main".into(),
            bid_id: None,
            price_bid: Cents(revenue),
            price_charged: Cents(revenue),
        }),
        currency: "USD".into(),
        talk_ms: Some(talk_secs * 1000),
        min_talk_secs: Some(60),
        payable,
        payable_reason: String::new(),
        revenue: Cents(if payable { revenue } else { 0 }),
        payout: Cents(if payable { 400 } else { 0 }),
        hangup_cause: None,
        hung_up_by: None,
        recording_path: recording,
        auction_us: Some(1000),
        consents: vec![],
        notes: vec![],
        sharing: vec![],
        opted_out: None,
        attestation: None,
    }
}

/// Every row of every table in the database, as text.
async fn dump_all_tables(client: &tokio_postgres::Client) -> String {
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = String::new();
    for t in tables {
        let sql = format!("SELECT COALESCE(string_agg(t::text, E'\\n'), '') FROM \"{t}\" t");
        let text: String = client.query_one(&sql, &[]).await.unwrap().get(0);
        out.push_str(&text);
        out.push('\n');
    }
    out
}

fn dump_dir(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn totals(report: &bidbridge::report::Report) -> Vec<(String, i64, i64, i64, i64, i64)> {
    report
        .rows
        .iter()
        .chain(std::iter::once(&report.total))
        .map(|g| {
            (
                g.key.clone(),
                g.calls,
                g.payable,
                g.revenue.0,
                g.payout.0,
                g.margin.0,
            )
        })
        .collect()
}

#[tokio::test]
async fn purge_hashes_old_numbers_deletes_old_recordings_and_keeps_money() {
    let db = TestDb::migrated().await;
    db.apply_catalog(CATALOG).await;
    let work = tempfile::tempdir().unwrap();
    let journal = work.path().join("journal");
    let recordings = work.path().join("recordings");
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::create_dir_all(&recordings).unwrap();
    let mut config = test_config(&db, &journal);
    config.privacy.purge_hash_key = "purge-secret".into();
    config.privacy.recordings_dir = recordings.clone();

    let now = Utc::now();
    let old = now - chrono::Duration::days(40);
    let recent = now - chrono::Duration::days(2);
    let file = |name: &str| {
        let p = recordings.join(name);
        std::fs::write(&p, b"RIFF").unwrap();
        p.to_string_lossy().into_owned()
    };
    let outside = work.path().join("outside.wav");
    std::fs::write(&outside, b"RIFF").unwrap();

    let old_numbers = ["+13125550101", "+13125550102", "+13125550103"];
    let records = vec![
        record(
            "auto",
            "search",
            old_numbers[0],
            old,
            95,
            1400,
            Some(file("old1.wav")),
        ),
        record(
            "auto",
            "search",
            old_numbers[1],
            old,
            30,
            1400,
            Some(outside.to_string_lossy().into_owned()),
        ),
        record(
            "auto",
            "search",
            "+13125550200",
            recent,
            120,
            2250,
            Some(file("recent.wav")),
        ),
        // No retention rule on "home": kept, number and recording.
        record(
            "home",
            "search",
            "+13125550300",
            old,
            80,
            999,
            Some(file("home.wav")),
        ),
    ];
    let mut client = db.client().await;
    bidbridge::ledger::store::insert_batch(&mut client, &records)
        .await
        .unwrap();
    // A journal backlog left by a crashed node: one old record already in
    // PostgreSQL, one that never reached it.
    let not_in_db = record("auto", "search", old_numbers[2], old, 70, 500, None);
    let segment = journal.join("records-00000000000000000001.jsonl");
    let mut text = serde_json::to_string(&records[0]).unwrap();
    text.push('\n');
    text.push_str(&serde_json::to_string(&not_in_db).unwrap());
    text.push('\n');
    std::fs::write(&segment, text).unwrap();

    let window = (
        now - chrono::Duration::days(365),
        now + chrono::Duration::days(1),
    );
    let reader = db.client().await;
    let by = |b| bidbridge::report::build(&reader, b, window.0, window.1);
    use bidbridge::report::GroupBy;
    // Money before: the not-yet-replayed record is counted after the purge
    // replays it, so compare against the database plus that record.
    let before_campaign = totals(&by(GroupBy::Campaign).await.unwrap());
    let before_source = totals(&by(GroupBy::Source).await.unwrap());

    // Dry run: changes nothing.
    let dry = bidbridge::purge::run(&mut client, &config, now, true)
        .await
        .unwrap();
    assert_eq!(
        dry.campaigns
            .iter()
            .find(|c| c.campaign_id == "auto")
            .unwrap()
            .callers_hashed,
        2
    );
    assert!(segment.exists());
    assert!(dump_all_tables(&client).await.contains(old_numbers[0]));

    let report = bidbridge::purge::run(&mut client, &config, now, false)
        .await
        .unwrap();
    let auto = report
        .campaigns
        .iter()
        .find(|c| c.campaign_id == "auto")
        .unwrap();
    assert_eq!(auto.callers_hashed, 3, "{}", report.render());
    assert_eq!(auto.recordings_deleted, 1, "{}", report.render());
    assert_eq!(auto.recordings_refused, 1, "{}", report.render());
    assert_eq!(report.journal.segments_removed, 1);
    assert_eq!(report.journal.records_replayed, 2);
    assert!(!report.complete(), "the refused recording is reported");
    assert!(
        report
            .render()
            .contains("campaign auto: 3 caller number(s) hashed")
    );

    // No old number anywhere: any table, the journal directory.
    let everything = dump_all_tables(&client).await;
    for n in old_numbers {
        assert!(!everything.contains(n), "{n} survived in the database");
        assert!(
            !everything.contains(&n[1..]),
            "{n} survived in the database"
        );
    }
    assert!(
        !dump_dir(&journal).contains("3125550"),
        "journal still holds numbers"
    );
    // Recent and rule-less calls keep their numbers.
    assert!(everything.contains("+13125550200"));
    assert!(everything.contains("+13125550300"));
    // The hash is the keyed one.
    let hashed: Vec<String> = client
        .query(
            "SELECT caller FROM calls WHERE caller_purged_at IS NOT NULL ORDER BY caller",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut expected: Vec<String> = old_numbers
        .iter()
        .map(|n| bidbridge::purge::hash_number(b"purge-secret", n))
        .collect();
    expected.sort();
    assert_eq!(hashed, expected);

    // Recordings: old inside deleted, recent and rule-less kept, outside untouched.
    assert!(!recordings.join("old1.wav").exists());
    assert!(recordings.join("recent.wav").exists());
    assert!(recordings.join("home.wav").exists());
    assert!(
        outside.exists(),
        "a file outside recordings_dir was touched"
    );
    let paths: i64 = client
        .query_one(
            "SELECT count(*) FROM calls WHERE recording_path IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(paths, 3, "outside + recent + home keep their paths");

    // Money unchanged to the cent (plus the replayed record's own money).
    let after_campaign = totals(&by(GroupBy::Campaign).await.unwrap());
    let after_source = totals(&by(GroupBy::Source).await.unwrap());
    let add_replayed = |rows: Vec<(String, i64, i64, i64, i64, i64)>, key: &str| {
        rows.into_iter()
            .map(|(k, calls, payable, rev, pay, margin)| {
                if k == key || k == "TOTAL" {
                    (
                        k,
                        calls + 1,
                        payable + 1,
                        rev + 500,
                        pay + 400,
                        margin + 100,
                    )
                } else {
                    (k, calls, payable, rev, pay, margin)
                }
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(after_campaign, add_replayed(before_campaign, "auto"));
    assert_eq!(after_source, add_replayed(before_source, "search"));

    // Idempotent: a second run changes nothing.
    let snapshot = dump_all_tables(&client).await;
    let again = bidbridge::purge::run(&mut client, &config, now, false)
        .await
        .unwrap();
    let auto = again
        .campaigns
        .iter()
        .find(|c| c.campaign_id == "auto")
        .unwrap();
    assert_eq!((auto.callers_hashed, auto.recordings_deleted), (0, 0));
    assert_eq!(again.journal.segments_removed, 0);
    let after_again = dump_all_tables(&client).await;
    assert_eq!(
        snapshot.lines().filter(|l| l.contains("hmac:")).count(),
        after_again.lines().filter(|l| l.contains("hmac:")).count()
    );
    assert_eq!(
        totals(&by(GroupBy::Campaign).await.unwrap()),
        after_campaign
    );
}

#[tokio::test]
async fn fraud_report_flags_clustered_talk_times_and_rotating_callers() {
    let db = TestDb::migrated().await;
    db.apply_catalog(CATALOG).await;
    let now = Utc::now();
    let at = |m: i64| now - chrono::Duration::minutes(m);
    let mut records = Vec::new();
    // "farm": every payable call talks 61-63 s on a 60 s minimum.
    for (i, talk) in [61, 62, 63, 61, 62, 63, 62].iter().enumerate() {
        records.push(record(
            "auto",
            "farm",
            &format!("+1415555{:04}", 1000 + i * 37),
            at(i as i64 + 1),
            *talk,
            1500,
            None,
        ));
    }
    // "organic": talk times spread out; distinct numbers all over.
    for (i, talk) in [61, 75, 140, 300, 95, 610, 88].iter().enumerate() {
        records.push(record(
            "auto",
            "organic",
            &format!("+1{}55501{:02}", 212 + i * 101, i),
            at(i as i64 + 1),
            *talk,
            1500,
            None,
        ));
    }
    // "dialer": one number block rotating its last two digits.
    for i in 0..8 {
        records.push(record(
            "auto",
            "dialer",
            &format!("+13125550{}", 110 + i),
            at(i + 1),
            20,
            1500,
            None,
        ));
    }
    let mut client = db.client().await;
    bidbridge::ledger::store::insert_batch(&mut client, &records)
        .await
        .unwrap();

    let report = bidbridge::fraud::build(
        &client,
        now - chrono::Duration::days(7),
        now,
        bidbridge::fraud::FraudOptions::default(),
    )
    .await
    .unwrap();
    let text = report.render();
    assert_eq!(
        report
            .talk_clusters
            .iter()
            .map(|c| c.source.as_str())
            .collect::<Vec<_>>(),
        vec!["farm"],
        "{text}"
    );
    let farm = &report.talk_clusters[0];
    assert_eq!((farm.payable_calls, farm.near_minimum), (7, 7));
    assert_eq!((farm.min_talk_secs, farm.max_talk_secs), (61, 63));
    assert_eq!(
        report
            .rotating_callers
            .iter()
            .map(|r| (r.source.as_str(), r.prefix.as_str(), r.distinct_callers))
            .collect::<Vec<_>>(),
        vec![("dialer", "+131255501", 8)],
        "{text}"
    );
    assert!(text.contains("SUSPICIOUS source farm"), "{text}");
    assert!(text.contains("SUSPICIOUS source dialer"), "{text}");
    assert!(!text.contains("source organic"), "{text}");

    // Auto-block ("auto" opted in): the offending numbers, and only them.
    let added = bidbridge::fraud::auto_block(&client, &report)
        .await
        .unwrap();
    assert_eq!(added, 15);
    let blocked: i64 = client
        .query_one(
            "SELECT count(*) FROM blocklist WHERE reason LIKE 'fraud auto-block:%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(blocked, 15);
    assert_eq!(
        bidbridge::fraud::auto_block(&client, &report)
            .await
            .unwrap(),
        0
    );

    // The CLI prints the same.
    let work = tempfile::tempdir().unwrap();
    let config_path = work.path().join("bidbridge.toml");
    std::fs::write(
        &config_path,
        format!("[database]\nurl = \"{}\"\n", db.config.url),
    )
    .unwrap();
    let out = std::process::Command::new(common::binary())
        .args([
            "--config",
            config_path.to_str().unwrap(),
            "report",
            "--fraud",
            "--since",
            "7d",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SUSPICIOUS source farm"), "{stdout}");
    assert!(stdout.contains("+131255501"), "{stdout}");

    // And `purge --dry-run` reports per campaign without changing anything.
    std::fs::write(
        &config_path,
        format!(
            "[database]\nurl = \"{}\"\n[privacy]\npurge_hash_key = \"k\"\n[records]\njournal_dir = \"{}\"\n",
            db.config.url,
            work.path().join("journal").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::binary())
        .args([
            "--config",
            config_path.to_str().unwrap(),
            "purge",
            "--dry-run",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("would purge campaign auto: 0 caller number(s) hashed (retention 30 d)"),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_daemon_locks_its_journal_and_drops_written_segments_once_old() {
    let db = TestDb::migrated().await;
    db.apply_catalog(&attestation_catalog("http://127.0.0.1:9/none", ""))
        .await;
    let journal = tempfile::tempdir().unwrap();
    let mut config = test_config(&db, journal.path());
    config.records.segment_max_age_secs = 1;
    let running = bidbridge::server::start(config).await.unwrap();
    let catalog = running.services.catalog.clone();
    assert!(eventually(Duration::from_secs(10), || async { catalog.is_loaded() }).await);
    // `bidbridge purge` must know a daemon may be appending here.
    assert!(bidbridge::ledger::journal::Journal::locked_by_other(
        journal.path()
    ));
    let scenario = Scenario::parse(&format!(
        "[run]\ncalls = 1\nrate_per_sec = 10.0\ntime_scale = 0.01\ntracking_number = \"+18005550100\"\n{LEGS}"
    ))
    .unwrap();
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
                == 1
        })
        .await
    );
    // The record is in PostgreSQL: its segment goes once older than 1 s,
    // while the daemon keeps running (no new call needed).
    let segments = || bidbridge::ledger::journal::Journal::segments(journal.path()).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async { segments().is_empty() }).await,
        "journal still holds {:?}",
        segments()
    );
    running.shutdown();
}

fn attestation_catalog(url: &str, extra: &str) -> String {
    format!(
        r#"
[[publishers]]
id = "pub"
name = "Publisher"
payout = {{ fixed = "4.00" }}

[[campaigns]]
id = "auto"
name = "Auto"
vertical = "insurance.auto"
min_talk_secs = 60
backup = {{ extension = "backup", context = "default" }}
{extra}

[[numbers]]
number = "+18005550100"
campaign = "auto"
publisher = "pub"
source = "search"

[[buyers]]
id = "a"
name = "a"

[[buyers.destinations]]
id = "a"
campaigns = ["auto"]
ping = {{ url = "{url}" }}
dial = {{ sip = "sip:leg-answer@127.0.0.1:5090" }}
ring_timeout_secs = 20
"#
    )
}

const LEGS: &str = r#"
[[legs]]
match = "leg-answer"
behaviour = "answer"
ring_secs = 1.0
talk_secs = 95.0

[[legs]]
match = "backup"
behaviour = "answer"
ring_secs = 1.0
talk_secs = 30.0
"#;

async fn attested_call(extra: &str, verstat: &str) -> (tokio_postgres::Row, usize) {
    let buyer = buyers::spawn(&BuyerSpec {
        listen: "127.0.0.1:0".parse().unwrap(),
        behaviour: BidBehaviour::Bid,
        price: Some("20.00".parse().unwrap()),
        delay_ms: 5,
        dialect: None,
        min_talk_secs: None,
        latency: None,
    })
    .await
    .unwrap();
    let db = TestDb::migrated().await;
    db.apply_catalog(&attestation_catalog(&buyer.url(), extra))
        .await;
    let journal = tempfile::tempdir().unwrap();
    let running = bidbridge::server::start(test_config(&db, journal.path()))
        .await
        .unwrap();
    let catalog = running.services.catalog.clone();
    assert!(eventually(Duration::from_secs(10), || async { catalog.is_loaded() }).await);
    let scenario = Scenario::parse(&format!(
        "[run]\ncalls = 1\nrate_per_sec = 10.0\ntime_scale = 0.01\ntracking_number = \"+18005550100\"\n\
         [[callers]]\nvariables = {{ sip_verstat = \"{verstat}\" }}\n{LEGS}"
    ))
    .unwrap();
    let report = bidbridge::simulate::run_freeswitch(running.esl_addr.unwrap(), &scenario).await;
    assert_eq!(report.failed, 0, "{:#?}", report.traces);
    let client = db.client().await;
    let mut row = None;
    for _ in 0..200 {
        if let Some(r) = client
            .query("SELECT * FROM calls", &[])
            .await
            .unwrap()
            .pop()
        {
            row = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown();
    (row.expect("a call record"), buyer.requests().len())
}

#[tokio::test]
async fn failed_attestation_on_a_campaign_requiring_a_goes_to_backup_without_pings() {
    let (call, pings) = attested_call("require_attestation = \"A\"", "TN-Validation-Failed").await;
    assert_eq!(pings, 0, "the buyer must not be pinged");
    assert_eq!(
        call.get::<_, Option<String>>("attestation").as_deref(),
        Some("failed")
    );
    assert_eq!(call.get::<_, String>("disposition"), "backup");
    assert!(!call.get::<_, bool>("payable"));
    let notes = call.get::<_, serde_json::Value>("notes").to_string();
    assert!(
        notes.contains("attestation failed below the campaign's required A"),
        "{notes}"
    );
}

#[tokio::test]
async fn unattested_not_payable_routes_but_pays_nothing_and_a_passes() {
    let (call, pings) = attested_call(
        "require_attestation = \"B\"\nunattested = \"not_payable\"",
        "No-TN-Validation",
    )
    .await;
    assert_eq!(pings, 1);
    assert_eq!(
        call.get::<_, Option<String>>("attestation").as_deref(),
        Some("none")
    );
    assert_eq!(call.get::<_, String>("disposition"), "sold");
    assert!(!call.get::<_, bool>("payable"));
    assert_eq!(call.get::<_, i64>("revenue_cents"), 0);

    let (call, pings) =
        attested_call("require_attestation = \"B\"", "TN-Validation-Passed-A").await;
    assert_eq!(pings, 1);
    assert_eq!(
        call.get::<_, Option<String>>("attestation").as_deref(),
        Some("A")
    );
    assert_eq!(call.get::<_, String>("disposition"), "sold");
    assert!(call.get::<_, bool>("payable"));
}
