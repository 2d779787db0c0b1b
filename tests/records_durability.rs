//! Records are never lost: PostgreSQL really stopped under calls, and the
//! daemon really killed with -9. Each test runs its own PostgreSQL cluster
//! (scripts/pg.sh with a private directory and port) so it can stop it
//! without disturbing other tests.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bidbridge::config::DatabaseConfig;
use bidbridge::simulate::buyers;
use bidbridge::simulate::scenario::{BidBehaviour, BuyerSpec, Scenario};
use common::eventually;

/// A private PostgreSQL cluster.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    fn pg(&self, action: &str) -> String {
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
            .arg(action)
            .env("BB_PGDIR", self.dir.path())
            .env("BB_PGPORT", self.port.to_string())
            .output()
            .expect("pg.sh");
        assert!(
            out.status.success(),
            "pg.sh {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string()
    }

    fn start() -> (Cluster, DatabaseConfig) {
        let port = 55000 + (std::process::id() % 1000) as u16 + rand::random::<u16>() % 3000;
        let cluster = Cluster {
            dir: tempfile::tempdir().unwrap(),
            port,
        };
        let url = cluster.pg("start");
        let config = DatabaseConfig {
            url,
            pool_size: 4,
            connect_timeout_ms: 1000,
            ..DatabaseConfig::default()
        };
        (cluster, config)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
            .arg("stop")
            .env("BB_PGDIR", self.dir.path())
            .env("BB_PGPORT", self.port.to_string())
            .output();
    }
}

async fn client(db: &DatabaseConfig) -> tokio_postgres::Client {
    let (client, conn) = bidbridge::db::connect_dedicated(db).await.expect("connect");
    tokio::spawn(conn);
    client
}

async fn prepare(db: &DatabaseConfig, buyer_url: &str) {
    let mut c = client(db).await;
    bidbridge::db::migrate::run(&mut c).await.unwrap();
    let catalog = format!(
        r#"
[[publishers]]
id = "pub"
name = "P"

[[campaigns]]
id = "c"
name = "C"
vertical = "v"
min_talk_secs = 30

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
ping = {{ url = "{buyer_url}" }}
dial = {{ sip = "sip:leg-answer@127.0.0.1" }}
"#
    );
    let doc = bidbridge::catalog::spec::CatalogDoc::parse(
        &catalog,
        bidbridge::catalog::spec::DocFormat::Toml,
    )
    .unwrap();
    bidbridge::catalog::store::apply(&mut c, &doc, true, false)
        .await
        .unwrap();
}

fn scenario(calls: u32) -> Scenario {
    Scenario::parse(&format!(
        "[run]\ncalls = {calls}\nrate_per_sec = 50.0\ntime_scale = 0.01\n\n[[legs]]\nmatch = \"leg-answer\"\nbehaviour = \"answer\"\nring_secs = 1.0\ntalk_secs = 45.0\n"
    ))
    .unwrap()
}

async fn count(db: &DatabaseConfig) -> (i64, i64) {
    let c = client(db).await;
    let row = c
        .query_one("SELECT count(*), count(DISTINCT call_id) FROM calls", &[])
        .await
        .unwrap();
    let attempts: i64 = c
        .query_one("SELECT count(*) FROM bridge_attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        attempts,
        row.get::<_, i64>(0),
        "one attempt per call, none duplicated"
    );
    (row.get(0), row.get(1))
}

async fn reachable(db: &DatabaseConfig) -> bool {
    bidbridge::db::connect_dedicated(db).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_under_calls_every_record_arrives_once_after_it_is_back() {
    let (cluster, db) = Cluster::start();
    let bidder = buyers::spawn(&BuyerSpec {
        listen: "127.0.0.1:0".parse().unwrap(),
        behaviour: BidBehaviour::Bid,
        price: Some("10.00".parse().unwrap()),
        delay_ms: 2,
        dialect: None,
        min_talk_secs: None,
        latency: None,
    })
    .await
    .unwrap();
    prepare(&db, &bidder.url()).await;
    let journal = tempfile::tempdir().unwrap();
    let mut config = bidbridge::config::Config {
        database: db.clone(),
        ..Default::default()
    };
    config.esl.listen = "127.0.0.1:0".parse().unwrap();
    config.agi.enabled = false;
    config.http.enabled = false;
    config.records.journal_dir = journal.path().to_path_buf();
    let running = bidbridge::server::start(config).await.unwrap();
    let services = running.services.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            services.catalog.is_loaded()
        })
        .await
    );
    let esl = running.esl_addr.unwrap();

    let before = bidbridge::simulate::run_freeswitch(esl, &scenario(10)).await;
    assert_eq!(before.completed, 10);
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&db).await.0 == 10
        })
        .await
    );

    // PostgreSQL goes away. Calls keep routing from the cached catalog.
    cluster.pg("stop");
    assert!(!reachable(&db).await);
    let during = bidbridge::simulate::run_freeswitch(esl, &scenario(20)).await;
    assert_eq!(
        during.completed, 20,
        "calls must route while PostgreSQL is down"
    );
    let stats = services.records.stats().clone();
    assert!(
        stats.db_down.load(std::sync::atomic::Ordering::Relaxed),
        "the writer noticed the outage"
    );
    assert!(
        journal_bytes(journal.path()) > 0,
        "records wait in the journal"
    );

    // Back: everything arrives, nothing twice.
    cluster.pg("start");
    assert!(
        eventually(Duration::from_secs(20), || async {
            reachable(&db).await && count(&db).await.0 >= 30
        })
        .await,
        "records did not catch up"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&db).await, (30, 30));
    let c = client(&db).await;
    let sold: i64 = c
        .query_one(
            "SELECT count(*) FROM calls WHERE disposition = 'sold' AND payable",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        sold, 30,
        "every call, outage or not, was routed to the buyer and settled"
    );
    running.shutdown();
    running.stopped().await;
}

fn journal_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn start_binary(config: &Path) -> Child {
    Command::new(common::binary())
        .arg("--config")
        .arg(config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start daemon")
}

async fn wait_for_port(port: u16) {
    assert!(
        eventually(Duration::from_secs(15), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await,
        "daemon did not listen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_with_dash_9_after_calls_ended_loses_no_record() {
    let (cluster, db) = Cluster::start();
    let bidder = buyers::spawn(&BuyerSpec {
        listen: "127.0.0.1:0".parse().unwrap(),
        behaviour: BidBehaviour::Bid,
        price: Some("10.00".parse().unwrap()),
        delay_ms: 2,
        dialect: None,
        min_talk_secs: None,
        latency: None,
    })
    .await
    .unwrap();
    prepare(&db, &bidder.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config: PathBuf = dir.path().join("bidbridge.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\nconnect_timeout_ms = 1000\n[esl]\nlisten = \"127.0.0.1:{port}\"\n[agi]\nenabled = false\n[http]\nenabled = false\n[records]\njournal_dir = \"{}\"\n",
            db.url,
            dir.path().join("journal").display()
        ),
    )
    .unwrap();

    // 1. Normal operation, then kill -9 right after the calls ended.
    let mut daemon = start_binary(&config);
    wait_for_port(port).await;
    let esl: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(
        bidbridge::simulate::run_freeswitch(esl, &scenario(5))
            .await
            .completed,
        5
    );
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    // 2. The same with PostgreSQL down: the only copy is the journal.
    let mut daemon = start_binary(&config);
    wait_for_port(port).await;
    cluster.pg("stop");
    assert_eq!(
        bidbridge::simulate::run_freeswitch(esl, &scenario(7))
            .await
            .completed,
        7
    );
    daemon.kill().unwrap(); // SIGKILL: no drain, no flush
    daemon.wait().unwrap();
    cluster.pg("start");
    assert!(eventually(Duration::from_secs(10), || async { reachable(&db).await }).await);
    let (rows, _) = count(&db).await;
    assert!(
        rows < 12,
        "the 7 calls made during the outage cannot be in PostgreSQL yet ({rows})"
    );

    // 3. On start, the journal is replayed: all 12, none twice.
    let mut daemon = start_binary(&config);
    let caught_up = eventually(Duration::from_secs(20), || async {
        count(&db).await.0 >= 12
    })
    .await;
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(caught_up, "journal not replayed on start");
    assert_eq!(count(&db).await, (12, 12));
}
