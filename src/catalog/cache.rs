//! The running daemon's catalog: moka caches filled from PostgreSQL and
//! kept fresh without a restart.
//!
//! Freshness: triggers on every catalog table `NOTIFY bidbridge_catalog`
//! (sql/0001_catalog.sql); the refresher LISTENs on a dedicated connection,
//! gathers notifications for a few milliseconds and reloads the whole
//! catalog, so a change reaches routing within well under a second. A full
//! reload also runs periodically, as a safety net for notifications lost
//! while the listening connection was down.
//!
//! Consistency: a reload builds a complete [`Snapshot`] first and only then
//! replaces the cache contents; a tracking number's entry points straight
//! at its campaign and publisher, so one lookup gives a call a consistent
//! view even while a reload is being installed. A document that fails
//! validation (someone edited rows by hand) is refused and the previous
//! catalog stays in force, loudly.
//!
//! Outages: lookups never touch PostgreSQL. If the database goes away the
//! daemon keeps routing from what it has; the refresher retries with
//! backoff and catches up with a full reload when it is back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use futures::StreamExt;
use moka::sync::Cache;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

use super::store;
use super::{Buyer, Campaign, NumberRoute, Publisher, Snapshot};
use crate::config::{CatalogConfig, DatabaseConfig};
use crate::phone::E164;

/// The NOTIFY channel the triggers use.
pub const NOTIFY_CHANNEL: &str = "bidbridge_catalog";

#[derive(Debug, Default, Clone)]
pub struct CacheStatus {
    pub loaded_at: Option<DateTime<Utc>>,
    /// Increments on every successful install.
    pub generation: u64,
    pub numbers: usize,
    pub campaigns: usize,
    pub buyers: usize,
    pub destinations: usize,
    pub last_error: Option<String>,
}

pub struct CatalogCache {
    numbers: Cache<E164, Arc<NumberRoute>>,
    campaigns: Cache<String, Arc<Campaign>>,
    buyers: Cache<String, Arc<Buyer>>,
    publishers: Cache<String, Arc<Publisher>>,
    blocklist: Cache<E164, String>,
    /// The do-not-call list (number → source), loaded with the catalog.
    dnc: Cache<E164, String>,
    /// Opt-outs taken on this node, kept until the database surely has
    /// them: a reload that lands before the record writer commits the
    /// opt-out must not forget it.
    local_dnc: Cache<E164, String>,
    status: Mutex<CacheStatus>,
    generation: watch::Sender<u64>,
}

impl std::fmt::Debug for CatalogCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogCache")
            .field("status", &self.status())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot reach PostgreSQL: {0}")]
    Db(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("the catalog in the database is invalid; keeping the previous one:\n{}", .0.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<super::spec::CatalogIssue>),
}

impl CatalogCache {
    pub fn new() -> Arc<CatalogCache> {
        // Unbounded: the catalog is small and an evicted entry would mean a
        // call missing its campaign. Nothing here expires on its own.
        let (generation, _) = watch::channel(0);
        Arc::new(CatalogCache {
            numbers: Cache::builder().build(),
            campaigns: Cache::builder().build(),
            buyers: Cache::builder().build(),
            publishers: Cache::builder().build(),
            blocklist: Cache::builder().build(),
            dnc: Cache::builder().build(),
            local_dnc: Cache::builder()
                .time_to_live(std::time::Duration::from_secs(3600))
                .build(),
            status: Mutex::new(CacheStatus::default()),
            generation,
        })
    }

    /// The route for a dialled number, if it is a tracking number.
    pub fn route(&self, number: &E164) -> Option<Arc<NumberRoute>> {
        self.numbers.get(number)
    }

    pub fn campaign(&self, id: &str) -> Option<Arc<Campaign>> {
        self.campaigns.get(id)
    }

    pub fn buyer(&self, id: &str) -> Option<Arc<Buyer>> {
        self.buyers.get(id)
    }

    /// Every buyer, in id order (token checks on the buyer API walk them).
    pub fn buyers(&self) -> Vec<Arc<Buyer>> {
        let mut all: Vec<Arc<Buyer>> = self.buyers.iter().map(|(_, v)| v).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    pub fn publisher(&self, id: &str) -> Option<Arc<Publisher>> {
        self.publishers.get(id)
    }

    /// The block reason when `number` is on the blocklist.
    pub fn blocked(&self, number: &E164) -> Option<String> {
        self.blocklist.get(number)
    }

    /// The do-not-call source when `number` is on the DNC list.
    pub fn do_not_call(&self, number: &E164) -> Option<String> {
        self.dnc.get(number).or_else(|| self.local_dnc.get(number))
    }

    /// Puts `number` on this node's DNC list at once (an IVR opt-out); the
    /// record writer stores it for every node.
    pub fn add_do_not_call(&self, number: &E164, source: &str) {
        self.local_dnc.insert(number.clone(), source.to_string());
    }

    /// Replaces the cached DNC list.
    pub fn install_dnc(&self, entries: std::collections::HashMap<E164, String>) {
        replace(&self.dnc, entries);
    }

    pub fn campaigns(&self) -> Vec<Arc<Campaign>> {
        let mut all: Vec<Arc<Campaign>> = self.campaigns.iter().map(|(_, v)| v).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    pub fn numbers(&self) -> Vec<Arc<NumberRoute>> {
        let mut all: Vec<Arc<NumberRoute>> = self.numbers.iter().map(|(_, v)| v).collect();
        all.sort_by(|a, b| a.number.cmp(&b.number));
        all
    }

    pub fn is_loaded(&self) -> bool {
        self.status().loaded_at.is_some()
    }

    pub fn status(&self) -> CacheStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Resolves when a reload newer than `after` has been installed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Replaces the cache contents with `snapshot`.
    pub fn install(&self, snapshot: Snapshot) {
        replace(&self.numbers, snapshot.numbers);
        replace(&self.campaigns, snapshot.campaigns);
        replace(&self.buyers, snapshot.buyers);
        replace(&self.publishers, snapshot.publishers);
        replace(&self.blocklist, snapshot.blocklist);
        let generation = {
            let Ok(mut status) = self.status.lock() else {
                return;
            };
            status.loaded_at = Some(Utc::now());
            status.generation += 1;
            status.numbers = self.numbers.iter().count();
            status.campaigns = self.campaigns.iter().count();
            status.buyers = self.buyers.iter().count();
            status.destinations = snapshot.destination_count;
            status.last_error = None;
            status.generation
        };
        self.generation.send_replace(generation);
    }

    fn record_error(&self, error: &CacheError) {
        if let Ok(mut status) = self.status.lock() {
            status.last_error = Some(error.to_string());
        }
    }
}

/// Inserts every new entry, then drops keys the new map does not have.
fn replace<K, V>(cache: &Cache<K, V>, fresh: std::collections::HashMap<K, V>)
where
    K: std::hash::Hash + Eq + Send + Sync + Clone + 'static,
    V: Clone + Send + Sync + 'static,
{
    let stale: Vec<Arc<K>> = cache
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !fresh.contains_key(k.as_ref()))
        .collect();
    for (k, v) in fresh {
        cache.insert(k, v);
    }
    for k in stale {
        cache.invalidate(k.as_ref());
    }
}

/// Loads the catalog from PostgreSQL and installs it.
pub async fn reload(cache: &CatalogCache, pool: &Pool) -> Result<(), CacheError> {
    let result = async {
        let mut client = pool
            .get()
            .await
            .map_err(|e| CacheError::Db(e.to_string()))?;
        let doc = store::load(&mut client).await?;
        let snapshot = Snapshot::build(&doc).map_err(CacheError::Invalid)?;
        let dnc = crate::compliance::dnc::list(&**client)
            .await
            .map_err(|e| CacheError::Db(e.to_string()))?
            .into_iter()
            .filter_map(|e| E164::parse_strict(&e.number).ok().map(|n| (n, e.source)))
            .collect();
        cache.install(snapshot);
        cache.install_dnc(dnc);
        Ok(())
    }
    .await;
    if let Err(e) = &result {
        cache.record_error(e);
    }
    result
}

/// Keeps `cache` fresh until `shutdown` turns true: LISTEN/NOTIFY with
/// debounce, plus a periodic full reload; reconnects with backoff.
pub fn spawn_refresher(
    cache: Arc<CatalogCache>,
    pool: Pool,
    database: DatabaseConfig,
    settings: CatalogConfig,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(500);
        loop {
            if *shutdown.borrow() {
                return;
            }
            match listen_session(&cache, &pool, &database, &settings, &mut shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "catalog listener lost; routing continues from the cached catalog");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    })
}

/// One LISTEN connection's life. Returns Ok on shutdown, Err when the
/// connection failed.
async fn listen_session(
    cache: &CatalogCache,
    pool: &Pool,
    database: &DatabaseConfig,
    settings: &CatalogConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), CacheError> {
    let (client, mut connection) = crate::db::connect_dedicated(database)
        .await
        .map_err(|e| CacheError::Db(e.to_string()))?;
    let (notify_tx, mut notify_rx) = mpsc::unbounded_channel::<()>();
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let driver = tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if notify_tx.send(()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    });
    let result = async {
        client.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}")).await.map_err(|e| CacheError::Db(e.to_string()))?;
        // Anything that changed while we were not listening.
        reload(cache, pool).await?;
        tracing::info!(status = ?cache.status(), "catalog loaded; listening for changes");
        let mut periodic = tokio::time::interval(Duration::from_secs(settings.refresh_secs.max(1)));
        periodic.tick().await;
        loop {
            tokio::select! {
                notified = notify_rx.recv() => {
                    if notified.is_none() {
                        return Err(CacheError::Db("the listening connection closed".into()));
                    }
                    // Gather the burst (one apply touches many tables).
                    tokio::time::sleep(Duration::from_millis(settings.notify_debounce_ms)).await;
                    while notify_rx.try_recv().is_ok() {}
                    match reload(cache, pool).await {
                        Ok(()) => tracing::info!(generation = cache.status().generation, "catalog reloaded after a change"),
                        Err(e) => tracing::error!(error = %e, "catalog reload failed"),
                    }
                }
                _ = periodic.tick() => {
                    if let Err(e) = reload(cache, pool).await {
                        tracing::error!(error = %e, "periodic catalog reload failed");
                    }
                }
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }
    .await;
    driver.abort();
    result
}
