//! Shared test support: a real PostgreSQL (the project's throwaway cluster
//! from scripts/pg.sh, one fresh database per test) and helpers to start
//! the daemon in-process on ephemeral loopback ports.
//!
//! Tests never fake the store: if PostgreSQL cannot be started, they fail.

#![allow(dead_code)]

pub mod esl;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bidbridge::catalog::spec::{CatalogDoc, DocFormat};
use bidbridge::config::{Config, DatabaseConfig};

/// `host=... port=... user=postgres` of the throwaway cluster (no dbname).
fn cluster() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("bash")
            .arg(root.join("scripts/pg.sh"))
            .arg("start")
            .output()
            .expect("run scripts/pg.sh start");
        assert!(
            out.status.success(),
            "scripts/pg.sh start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        url.replace(" dbname=bidbridge", "")
    })
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty database for one test.
pub struct TestDb {
    pub name: String,
    pub config: DatabaseConfig,
}

impl TestDb {
    /// Creates an empty database (no schema).
    pub async fn empty() -> TestDb {
        let base = cluster();
        let name = format!(
            "bb_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let (client, conn) =
            tokio_postgres::connect(&format!("{base} dbname=postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect to the test cluster");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let config = DatabaseConfig {
            url: format!("{base} dbname={name}"),
            pool_size: 8,
            ..DatabaseConfig::default()
        };
        TestDb { name, config }
    }

    /// A fresh database with the schema applied.
    pub async fn migrated() -> TestDb {
        let db = TestDb::empty().await;
        let mut client = db.client().await;
        bidbridge::db::migrate::run(&mut client)
            .await
            .expect("migrate");
        db
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = bidbridge::db::connect_dedicated(&self.config)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
    }

    /// Applies a catalog document given as TOML.
    pub async fn apply_catalog(&self, toml: &str) {
        let doc = CatalogDoc::parse(toml, DocFormat::Toml).expect("catalog parses");
        let mut client = self.client().await;
        bidbridge::catalog::store::apply(&mut client, &doc, true, false)
            .await
            .expect("catalog applies");
    }
}

/// A daemon configuration for tests: loopback port 0 everywhere, the test
/// database, a private journal directory, short drain.
pub fn test_config(db: &TestDb, journal: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.node.id = "test-node".into();
    config.database = db.config.clone();
    config.esl.listen = "127.0.0.1:0".parse().expect("addr");
    config.agi.listen = "127.0.0.1:0".parse().expect("addr");
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.records.journal_dir = journal.to_path_buf();
    config.records.flush_interval_ms = 10;
    config.calls.drain_timeout_secs = 10;
    config.catalog.notify_debounce_ms = 20;
    config.freeswitch.prompts_dir = "/opt/freeswitch/share/sounds/prompts".into();
    config.freeswitch.sip_profile = "harness".into();
    config
}

/// Waits until `check` is true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Path of the bidbridge binary cargo built for the integration tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bidbridge"))
}
