//! The foundation against a real PostgreSQL: migrations, the catalog file
//! round trip, live catalog refresh, configuration errors, and the SIGTERM
//! drain of the real binary.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bidbridge::catalog::spec::{CatalogDoc, DocFormat};
use common::{TestDb, eventually, test_config};

pub const CATALOG: &str = r#"
[[publishers]]
id = "pub-acme"
name = "Acme Media"
payout = { share_percent = "40" }

[[campaigns]]
id = "auto"
name = "Auto insurance"
vertical = "insurance.auto"
floor = "5.00"
min_talk_secs = 60
backup = { extension = "backup", context = "default" }

[campaigns.ivr]
start = "product"

[[campaigns.ivr.nodes]]
id = "product"
prompt = "welcome"
options = { "1" = { tag = "product=auto", next = "zip" }, "2" = { tag = "product=home", next = "zip" } }

[[campaigns.ivr.nodes]]
id = "zip"
prompt = "enter-zip"
collect = { digits = 5, tag = "zip" }

[[numbers]]
number = "+18005550100"
campaign = "auto"
publisher = "pub-acme"
source = "search"

[[buyers]]
id = "buyer-a"
name = "Buyer A"

[[buyers.destinations]]
id = "buyer-a-main"
campaigns = ["auto"]
static_price = "12.50"
dial = { sip = "sip:buyer-answer@127.0.0.1:5090" }
ring_timeout_secs = 20
"#;

#[tokio::test]
async fn migrations_apply_once_and_reapply_as_a_no_op() {
    let db = TestDb::empty().await;
    let mut client = db.client().await;
    let first = bidbridge::db::migrate::run(&mut client)
        .await
        .expect("first migrate");
    assert_eq!(
        first.applied.len(),
        bidbridge::db::migrate::MIGRATIONS.len()
    );
    let second = bidbridge::db::migrate::run(&mut client)
        .await
        .expect("second migrate");
    assert!(
        second.applied.is_empty(),
        "re-apply applied {:?}",
        second.applied
    );
    assert_eq!(
        second.already.len(),
        bidbridge::db::migrate::MIGRATIONS.len()
    );
    let rows: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows as usize, bidbridge::db::migrate::MIGRATIONS.len());
}

#[tokio::test]
async fn two_concurrent_migrate_runs_do_not_conflict() {
    let db = TestDb::empty().await;
    let mut a = db.client().await;
    let mut b = db.client().await;
    let (ra, rb) = tokio::join!(
        bidbridge::db::migrate::run(&mut a),
        bidbridge::db::migrate::run(&mut b)
    );
    let (ra, rb) = (ra.expect("run a"), rb.expect("run b"));
    // Exactly one of them did the work; neither failed.
    assert_eq!(
        ra.applied.len() + rb.applied.len(),
        bidbridge::db::migrate::MIGRATIONS.len()
    );
    let rows: i64 = a
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows as usize, bidbridge::db::migrate::MIGRATIONS.len());
}

#[tokio::test]
async fn the_migrate_command_is_safe_to_run_twice() {
    let db = TestDb::empty().await;
    for expect in ["applied 0001_catalog.sql", "schema is up to date"] {
        let out = Command::new(common::binary())
            .args(["--config", "/dev/null", "migrate"])
            .env("BIDBRIDGE_DATABASE_URL", &db.config.url)
            .output()
            .expect("run migrate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(expect));
    }
}

#[tokio::test]
async fn catalog_apply_then_export_round_trips_and_reapplies_as_a_no_op() {
    let db = TestDb::migrated().await;
    let doc = CatalogDoc::parse(CATALOG, DocFormat::Toml).unwrap();
    let mut client = db.client().await;

    let dry = bidbridge::catalog::store::apply(&mut client, &doc, false, true)
        .await
        .unwrap();
    assert!(dry.iter().all(|c| c.is_write()), "{dry:?}");
    let count: i64 = client
        .query_one("SELECT count(*) FROM campaigns", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "dry run wrote");

    let changes = bidbridge::catalog::store::apply(&mut client, &doc, false, false)
        .await
        .unwrap();
    assert_eq!(
        changes.iter().filter(|c| c.is_write()).count(),
        5,
        "{changes:?}"
    );

    let exported = bidbridge::catalog::store::load(&mut client).await.unwrap();
    for format in [DocFormat::Toml, DocFormat::Yaml] {
        let text = exported.render(format).unwrap();
        let again = CatalogDoc::parse(&text, format).unwrap();
        let changes = bidbridge::catalog::store::apply(&mut client, &again, false, false)
            .await
            .unwrap();
        assert!(
            changes.iter().all(|c| !c.is_write()),
            "apply(export) changed {changes:?}\n{text}"
        );
    }

    // A change names the field; an absent entry is kept unless pruned.
    let mut edited = doc.clone();
    edited.buyers[0].destinations[0].ring_timeout_secs = 25;
    edited.numbers.clear();
    let changes = bidbridge::catalog::store::apply(&mut client, &edited, false, false)
        .await
        .unwrap();
    let text: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t == "~ destination buyer-a-main (ring_timeout_secs)"),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.starts_with("? number +18005550100")),
        "{text:?}"
    );
    let changes = bidbridge::catalog::store::apply(&mut client, &edited, true, false)
        .await
        .unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.to_string() == "- number +18005550100")
    );
}

#[tokio::test]
async fn catalog_errors_name_the_entry_and_the_field() {
    let bad = CATALOG
        .replace(
            "dial = { sip = \"sip:buyer-answer@127.0.0.1:5090\" }",
            "dial = { sip = \"sip:evil@x\\nexecute-app-name: hangup\" }",
        )
        .replace("campaign = \"auto\"\n", "campaign = \"nope\"\n");
    let doc = CatalogDoc::parse(&bad, DocFormat::Toml).unwrap();
    let issues: Vec<String> = doc.validate().iter().map(|i| i.to_string()).collect();
    assert!(
        issues
            .iter()
            .any(|i| i.starts_with("destination buyer-a-main: dial:")),
        "{issues:?}"
    );
    assert!(
        issues
            .iter()
            .any(|i| i.starts_with("number +18005550100: campaign: no campaign `nope`")),
        "{issues:?}"
    );

    // Nothing is written when anything is wrong.
    let db = TestDb::migrated().await;
    let mut client = db.client().await;
    assert!(
        bidbridge::catalog::store::apply(&mut client, &doc, false, false)
            .await
            .is_err()
    );
    let count: i64 = client
        .query_one("SELECT count(*) FROM buyers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);

    // Type errors name the key path.
    let err = CatalogDoc::parse(
        &CATALOG.replace("ring_timeout_secs = 20", "ring_timeout_secs = \"soon\""),
        DocFormat::Toml,
    )
    .unwrap_err();
    assert!(
        err.contains("buyers[0].destinations[0].ring_timeout_secs"),
        "{err}"
    );
}

#[tokio::test]
async fn a_running_daemon_sees_a_buyer_change_within_one_second() {
    let db = TestDb::migrated().await;
    db.apply_catalog(CATALOG).await;
    let journal = tempfile::tempdir().unwrap();
    let running = bidbridge::server::start(test_config(&db, journal.path()))
        .await
        .expect("daemon starts");
    let catalog = running.services.catalog.clone();
    assert!(eventually(Duration::from_secs(10), || async { catalog.is_loaded() }).await);
    // The listener must be up, or the NOTIFY could be missed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(catalog.buyer("buyer-a").unwrap().name, "Buyer A");

    let client = db.client().await;
    let changed_at = Instant::now();
    client
        .execute(
            "UPDATE buyers SET name = 'Buyer A (renamed)' WHERE id = 'buyer-a'",
            &[],
        )
        .await
        .unwrap();
    let seen = eventually(Duration::from_secs(1), || async {
        catalog
            .buyer("buyer-a")
            .is_some_and(|b| b.name == "Buyer A (renamed)")
    })
    .await;
    assert!(seen, "change not seen within 1 s");
    eprintln!("catalog change seen after {:?}", changed_at.elapsed());

    // A destination's ring timeout changed by SQL reaches the campaign's view.
    client
        .execute("UPDATE destinations SET ring_timeout_secs = 33", &[])
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(1), || async {
            catalog
                .campaign("auto")
                .is_some_and(|c| c.destinations[0].ring_timeout == Duration::from_secs(33))
        })
        .await
    );
    running.shutdown();
    running.stopped().await;
}

fn write_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("bidbridge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn check_with(config: &std::path::Path) -> (i32, String) {
    let out = Command::new(common::binary())
        .arg("--config")
        .arg(config)
        .arg("check")
        .output()
        .expect("run check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bad_configuration_files_exit_2_naming_file_key_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[esl]\nlistne = \"127.0.0.1:8084\"\n",
            vec!["bidbridge.toml", "esl", "unknown field `listne`"],
        ),
        (
            "[calls]\ndrain_timeout_secs = \"soon\"\n",
            vec!["bidbridge.toml", "calls.drain_timeout_secs", "expected"],
        ),
        (
            "[agi]\nlisten = \"localhost:port\"\n",
            vec!["bidbridge.toml", "agi.listen", "socket address"],
        ),
    ];
    for (text, wants) in cases {
        let path = write_config(dir.path(), text);
        let (code, stderr) = check_with(&path);
        assert_eq!(code, 2, "{text}: {stderr}");
        for want in wants {
            assert!(
                stderr.contains(want),
                "{text}: missing {want:?} in {stderr}"
            );
        }
    }
    let (code, stderr) = check_with(&dir.path().join("missing.toml"));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("missing.toml") && stderr.contains("No such file"),
        "{stderr}"
    );
}

/// Minimal FreeSWITCH side: reads one command (through its blank line).
fn read_command(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\n\n") {
        if stream.read(&mut byte).unwrap_or(0) == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    String::from_utf8_lossy(&buf).to_string()
}

#[tokio::test]
async fn sigterm_drains_a_call_in_progress_instead_of_cutting_it() {
    let db = TestDb::migrated().await;
    db.apply_catalog(CATALOG).await;
    let dir = tempfile::tempdir().unwrap();
    let esl_port = free_port();
    let http_port = free_port();
    let config = write_config(
        dir.path(),
        &format!(
            "[database]\nurl = \"{}\"\n[esl]\nlisten = \"127.0.0.1:{esl_port}\"\n[agi]\nenabled = false\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n[records]\njournal_dir = \"{}\"\n[calls]\ndrain_timeout_secs = 20\n",
            db.config.url,
            dir.path().join("journal").display()
        ),
    );
    let mut daemon = Command::new(common::binary())
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start daemon");

    // Wait until it takes calls.
    let mut stream = None;
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", esl_port)) {
            stream = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut fs = stream.expect("daemon listens");
    fs.set_read_timeout(Some(Duration::from_secs(10))).unwrap();

    // Play FreeSWITCH up to the daemon's first application (answer), then hold.
    let transcript = common::esl::Transcript::load("01_outbound_ivr_bridge_failover.esl");
    assert_eq!(read_command(&mut fs), "connect\n\n");
    fs.write_all(&transcript.connect_reply()).unwrap();
    let mut answer_uuid = None;
    while answer_uuid.is_none() {
        let command = read_command(&mut fs);
        assert!(!command.is_empty(), "daemon closed early");
        match common::esl::verb(&command) {
            "myevents" => fs
                .write_all(b"Content-Type: command/reply\nReply-Text: +OK Events Enabled\n\n")
                .unwrap(),
            "linger" => fs
                .write_all(b"Content-Type: command/reply\nReply-Text: +OK will linger\n\n")
                .unwrap(),
            "nixevent" => fs
                .write_all(b"Content-Type: command/reply\nReply-Text: +OK events nixed\n\n")
                .unwrap(),
            _ => {
                fs.write_all(b"Content-Type: command/reply\nReply-Text: +OK\n\n")
                    .unwrap();
                if common::esl::app_of(&command).as_deref() == Some("answer") {
                    answer_uuid =
                        common::esl::command_header(&command, "Event-UUID").map(str::to_string);
                }
            }
        }
    }

    // SIGTERM while the call waits on the switch.
    let pid = daemon.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "daemon exited with a call in progress"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", esl_port)).is_err(),
        "still accepting new calls while draining"
    );

    // The caller hangs up: the call finishes, the daemon exits 0.
    let uuid = "78570aa9-402e-4726-a7a4-2e616e685c22";
    let body = format!(
        "Event-Name: CHANNEL_HANGUP\nUnique-ID: {uuid}\nHangup-Cause: NORMAL_CLEARING\nEvent-Date-Timestamp: 1795237511084971\n\n"
    );
    fs.write_all(
        format!(
            "Content-Length: {}\nContent-Type: text/event-plain\n\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let _ = answer_uuid;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        // Keep answering whatever the daemon still says (exit, api).
        fs.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let command = read_command(&mut fs);
        if !command.is_empty() {
            let _ = fs.write_all(b"Content-Type: command/reply\nReply-Text: +OK bye\n\n");
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "daemon did not exit after the call ended"
        );
    };
    let mut stderr = String::new();
    if let Some(mut e) = daemon.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(status.success(), "exit status {status:?}\n{stderr}");
    assert!(stderr.contains("draining"), "{stderr}");
    // Every line about the call carries its call id (at info level: the
    // one line that sums the call up, and any warning on its way).
    let call_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            l.contains("call settled") || l.contains("hanging up") || l.contains("caller hung up")
        })
        .collect();
    assert!(!call_lines.is_empty(), "{stderr}");
    assert!(
        call_lines.iter().all(|l| l.contains("call_id=")),
        "{call_lines:?}"
    );

    // The drained call was recorded.
    let client = db.client().await;
    let row = client
        .query_one("SELECT disposition, stage_reached FROM calls", &[])
        .await
        .expect("one call record");
    assert_eq!(row.get::<_, String>(0), "abandoned");
    assert_eq!(row.get::<_, String>(1), "ivr");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
