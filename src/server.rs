//! `bidbridge run`: the daemon's life from start to SIGTERM.
//!
//! Start-up order matters for callers: the HTTP API comes up first (health
//! answers, readiness says "not yet"), then the database and the catalog
//! (retried with backoff, never a crash loop), and only then the call
//! listeners. Until they listen, the switch's `socket`/`AGI()` fails at once
//! and the dialplan's failover connects the caller to the backup line.
//!
//! Shutdown (SIGTERM/SIGINT): stop accepting calls, let calls in progress
//! finish for up to `calls.drain_timeout_secs`, flush the record writer,
//! exit 0. Calls still up after the drain are left to the switch's
//! failover path (the session closes; FreeSWITCH resumes its dialplan,
//! Asterisk sees the AGI end without BIDBRIDGE_DONE).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;

use crate::catalog::cache::{self, CatalogCache};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::services::Services;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the record journal: {0}")]
    Journal(#[from] crate::ledger::journal::JournalError),
}

/// Live state the HTTP API reports.
pub struct DaemonState {
    pub draining: watch::Sender<bool>,
    pub listening: watch::Sender<bool>,
}

/// A started daemon: where it listens, and how to stop it.
pub struct Running {
    pub esl_addr: Option<std::net::SocketAddr>,
    pub agi_addr: Option<std::net::SocketAddr>,
    pub http_addr: Option<std::net::SocketAddr>,
    pub services: Arc<Services>,
    shutdown: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Begins the SIGTERM sequence (stop accepting, drain, flush).
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until the daemon has fully stopped.
    pub async fn stopped(self) {
        let _ = self.done.await;
    }
}

/// `bidbridge run`: start, then serve until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), ServerError> {
    let running = start(config).await?;
    let shutdown = running.shutdown.clone();
    tokio::spawn(wait_for_signal(shutdown));
    running.stopped().await;
    Ok(())
}

/// Starts the daemon: HTTP, then (in the background) the catalog and the
/// call listeners. Listener addresses may use port 0; the bound ones are
/// returned. Call listeners are bound here, so a bad address fails start.
pub async fn start(config: Config) -> Result<Running, ServerError> {
    crate::auction::ping::install_crypto_provider();
    let metrics = Arc::new(Metrics::new());
    let catalog = CatalogCache::new();
    let pool = crate::db::pool(&config.database)?;
    let (shutdown_tx, shutdown) = watch::channel(false);

    let (records, writer) = crate::ledger::writer::start(&config.records, &config.database)?;
    let caps = crate::caps::Caps::new(pool.clone(), config.node.id.clone());
    let stats = crate::auction::stats::DestinationStats::new();
    let services = Arc::new(
        Services::new(config.clone(), catalog.clone(), records, metrics.clone())
            .with_caps(caps.clone())
            .with_scorer(stats.clone())
            .with_database(pool.clone()),
    );
    let state = Arc::new(DaemonState {
        draining: watch::channel(false).0,
        listening: watch::channel(false).0,
    });

    let bind = |what: &'static str, addr: std::net::SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { what, addr, source })
    };
    let http_listener = if config.http.enabled {
        Some(bind("http", config.http.listen).await?)
    } else {
        None
    };
    let esl_listener = if config.esl.enabled {
        Some(bind("esl", config.esl.listen).await?)
    } else {
        None
    };
    let agi_listener = if config.agi.enabled {
        Some(bind("agi", config.agi.listen).await?)
    } else {
        None
    };
    let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    let (http_addr, esl_addr, agi_addr) = (
        local(&http_listener),
        local(&esl_listener),
        local(&agi_listener),
    );

    let http = http_listener.map(|listener| {
        tracing::info!(listen = ?http_addr, "HTTP API listening");
        tokio::spawn(crate::api::serve(
            listener,
            services.clone(),
            pool.clone(),
            state.clone(),
            shutdown.clone(),
        ))
    });

    // Postbacks are sent from the outbox by their own task: nothing a
    // receiver does can slow a call.
    let postbacks = config.postbacks.enabled.then(|| {
        crate::ledger::postback::spawn(
            config.postbacks.clone(),
            config.node.id.clone(),
            pool.clone(),
            metrics.clone(),
            shutdown.clone(),
        )
    });

    let background = {
        let services = services.clone();
        async move {
            // The catalog must be loaded before we take calls.
            if !load_catalog(&catalog, &pool, shutdown.clone()).await {
                tracing::info!("shut down before the catalog was loaded");
                if let Some(p) = postbacks {
                    let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
                }
                stop_writer(writer).await;
                return;
            }
            let caps_maintenance = caps.spawn_maintenance();
            // Retention: hash old caller numbers, delete old recordings.
            let purge = crate::purge::spawn(config.clone(), shutdown.clone());
            let stats_refresh = stats.spawn_refresh(pool.clone());
            let refresher = cache::spawn_refresher(
                catalog.clone(),
                pool.clone(),
                config.database.clone(),
                config.catalog.clone(),
                shutdown.clone(),
            );
            let calls = TaskTracker::new();
            let slots = Arc::new(Semaphore::new(config.calls.max_concurrent));
            let mut accept_loops = Vec::new();
            if let Some(listener) = esl_listener {
                tracing::info!(listen = ?esl_addr, "FreeSWITCH outbound ESL listening");
                accept_loops.push(tokio::spawn(accept_loop(
                    "esl",
                    listener,
                    slots.clone(),
                    calls.clone(),
                    shutdown.clone(),
                    services.clone(),
                    crate::pbx::freeswitch::serve_connection,
                )));
            }
            if let Some(listener) = agi_listener {
                tracing::info!(listen = ?agi_addr, "Asterisk FastAGI listening");
                accept_loops.push(tokio::spawn(accept_loop(
                    "agi",
                    listener,
                    slots.clone(),
                    calls.clone(),
                    shutdown.clone(),
                    services.clone(),
                    crate::pbx::asterisk::serve_connection,
                )));
            }
            state.listening.send_replace(true);

            let mut shutdown_wait = shutdown.clone();
            let _ = shutdown_wait.wait_for(|s| *s).await;
            state.draining.send_replace(true);
            for handle in accept_loops {
                let _ = handle.await;
            }
            calls.close();
            let in_progress = calls.len();
            let drain = Duration::from_secs(config.calls.drain_timeout_secs);
            tracing::info!(
                calls_in_progress = in_progress,
                drain_secs = drain.as_secs(),
                "stopped accepting calls; draining"
            );
            if tokio::time::timeout(drain, calls.wait()).await.is_err() {
                tracing::warn!(
                    calls_cut = calls.len(),
                    "drain time over; remaining calls are left to the switch's failover path"
                );
            } else {
                tracing::info!("all calls finished");
            }
            refresher.abort();
            caps_maintenance.abort();
            if let Some(purge) = purge {
                purge.abort();
            }
            stats_refresh.abort();
            if let Some(http) = http {
                let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
            }
            // Rows being sent stay leased and are retried later: nothing is lost.
            if let Some(p) = postbacks {
                let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
            }
            stop_writer(writer).await;
            tracing::info!("bidbridge stopped");
        }
    };
    let done = tokio::spawn(background);
    Ok(Running {
        esl_addr,
        agi_addr,
        http_addr,
        services,
        shutdown: shutdown_tx,
        done,
    })
}

async fn stop_writer(writer: crate::ledger::writer::WriterHandle) {
    let _ = tokio::task::spawn_blocking(move || writer.stop()).await;
}

/// Loads the catalog, retrying with backoff until it works or shutdown.
async fn load_catalog(
    catalog: &CatalogCache,
    pool: &deadpool_postgres::Pool,
    mut shutdown: watch::Receiver<bool>,
) -> bool {
    let mut delay = Duration::from_millis(500);
    loop {
        match cache::reload(catalog, pool).await {
            Ok(()) => {
                tracing::info!(status = ?catalog.status(), "catalog loaded");
                return true;
            }
            Err(e) => {
                tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot load the catalog from PostgreSQL at start; not taking calls yet (the dialplan's failover serves them)");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|s| *s) => return false,
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Accepts connections until shutdown; each runs `serve` in its own task
/// holding a concurrency slot, tracked for the drain.
async fn accept_loop<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    slots: Arc<Semaphore>,
    calls: TaskTracker,
    mut shutdown: watch::Receiver<bool>,
    services: Arc<Services>,
    serve: F,
) where
    F: Fn(TcpStream, Arc<Services>) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = Duration::from_millis(10);
    loop {
        // Take a slot first: at the limit, new calls wait in the listen
        // backlog rather than being accepted and starved.
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, _peer)) => {
                backoff = Duration::from_millis(10);
                let services = services.clone();
                calls.spawn(async move {
                    serve(stream, services).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::error!(listener = name, error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn wait_for_signal(shutdown: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.send_replace(true);
}
