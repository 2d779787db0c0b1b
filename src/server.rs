//! `bidbridge run`: the daemon's life from start to SIGTERM.
//!
//! Start-up order matters for callers: the HTTP API comes up first (health
//! answers, readiness says "not yet"), then the database and the catalog
//! (retried with backoff, never a crash loop), and only then do the call
//! sockets listen. They are bound at start (a taken port fails start), but
//! until they listen the kernel refuses the switch's connect, so
//! `socket`/`AGI()` fails at once and the dialplan's failover connects the
//! caller to the backup line. Once listening, a call beyond
//! `calls.max_concurrent` is accepted and handed straight back to the
//! dialplan ([`crate::admission`]), never left in the listen backlog.
//!
//! Shutdown (SIGTERM/SIGINT): stop accepting calls, let calls in progress
//! finish for up to `calls.drain_timeout_secs`, flush the record writer,
//! exit 0. Calls still up after the drain are left to the switch's
//! failover path (the session closes; FreeSWITCH resumes its dialplan,
//! Asterisk sees the AGI end without BIDBRIDGE_DONE).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::admission::{Admission, Decision, Refusal};
use crate::catalog::cache::{self, CatalogCache};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pbx::PbxKind;
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

    let http_listener = if config.http.enabled {
        let addr = config.http.listen;
        Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind {
                    what: "http",
                    addr,
                    source,
                })?,
        )
    } else {
        None
    };
    let esl_socket = if config.esl.enabled {
        Some(bind_call_socket("esl", config.esl.listen)?)
    } else {
        None
    };
    let agi_socket = if config.agi.enabled {
        Some(bind_call_socket("agi", config.agi.listen)?)
    } else {
        None
    };
    let http_addr = http_listener.as_ref().and_then(|l| l.local_addr().ok());
    let local = |s: &Option<TcpSocket>| s.as_ref().and_then(|s| s.local_addr().ok());
    let (esl_addr, agi_addr) = (local(&esl_socket), local(&agi_socket));

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
            // The catalog must be loaded before the call sockets listen.
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
            let intake = Intake {
                admission: Arc::new(Admission::new(config.calls.max_concurrent, metrics.clone())),
                calls: calls.clone(),
                shutdown: shutdown.clone(),
                services: services.clone(),
            };
            let mut accept_loops = Vec::new();
            let mut all_listening = true;
            if let Some(socket) = esl_socket {
                match start_accepting(
                    PbxKind::Freeswitch,
                    socket,
                    esl_addr,
                    &intake,
                    crate::pbx::freeswitch::serve_connection,
                    crate::pbx::freeswitch::refuse_connection,
                ) {
                    Some(handle) => accept_loops.push(handle),
                    None => all_listening = false,
                }
            }
            if let Some(socket) = agi_socket {
                match start_accepting(
                    PbxKind::Asterisk,
                    socket,
                    agi_addr,
                    &intake,
                    crate::pbx::asterisk::serve_connection,
                    crate::pbx::asterisk::refuse_connection,
                ) {
                    Some(handle) => accept_loops.push(handle),
                    None => all_listening = false,
                }
            }
            // Readiness stays false if a call socket could not listen: the
            // operator sees it, and that switch's calls fail over at once.
            state.listening.send_replace(all_listening);

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

/// Connections the kernel may queue for a call socket before we accept
/// them (tokio's default for `TcpListener::bind`).
const LISTEN_BACKLOG: u32 = 1024;

/// Binds a call socket without listening on it: a taken or bad address
/// fails start, yet the switch's connects are refused by the kernel (and
/// fail over at once) until [`listen`] is called.
fn bind_call_socket(
    what: &'static str,
    addr: std::net::SocketAddr,
) -> Result<TcpSocket, ServerError> {
    let bind = || -> std::io::Result<TcpSocket> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As TcpListener::bind does: a restart must not wait for the old
        // connections' TIME_WAIT. Linux still refuses the bind while
        // another socket listens on the address.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        Ok(socket)
    };
    bind().map_err(|source| ServerError::Bind { what, addr, source })
}

/// What every accept loop shares.
#[derive(Clone)]
struct Intake {
    admission: Arc<Admission>,
    /// Calls being served, for the SIGTERM drain.
    calls: TaskTracker,
    shutdown: watch::Receiver<bool>,
    services: Arc<Services>,
}

/// Starts listening on a bound call socket and spawns its accept loop;
/// logs and returns None when listening fails (another process began
/// listening on the port meanwhile).
fn start_accepting<S, SFut, R, RFut>(
    pbx: PbxKind,
    socket: TcpSocket,
    addr: Option<std::net::SocketAddr>,
    intake: &Intake,
    serve: S,
    refuse: R,
) -> Option<tokio::task::JoinHandle<()>>
where
    S: Fn(TcpStream, Arc<Services>) -> SFut + Copy + Send + 'static,
    SFut: Future<Output = ()> + Send + 'static,
    R: Fn(TcpStream) -> RFut + Copy + Send + 'static,
    RFut: Future<Output = ()> + Send + 'static,
{
    match socket.listen(LISTEN_BACKLOG) {
        Ok(listener) => {
            tracing::info!(pbx = pbx.as_str(), listen = ?addr, "listening for calls");
            Some(tokio::spawn(accept_loop(
                pbx,
                listener,
                intake.clone(),
                serve,
                refuse,
            )))
        }
        Err(e) => {
            tracing::error!(pbx = pbx.as_str(), listen = ?addr, error = %e, "cannot listen for calls; this switch's calls fail over until bidbridge is restarted");
            None
        }
    }
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

/// Accepts connections until shutdown. Each is served in its own task
/// holding a call slot (tracked for the drain), or, when [`Admission`]
/// refuses it, handed back to the switch's dialplan.
async fn accept_loop<S, SFut, R, RFut>(
    pbx: PbxKind,
    listener: TcpListener,
    mut intake: Intake,
    serve: S,
    refuse: R,
) where
    S: Fn(TcpStream, Arc<Services>) -> SFut + Copy + Send + 'static,
    SFut: Future<Output = ()> + Send + 'static,
    R: Fn(TcpStream) -> RFut + Copy + Send + 'static,
    RFut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => Some(accepted),
            _ = intake.shutdown.wait_for(|s| *s) => None,
        };
        let Some(accepted) = accepted else {
            hand_back_backlog(pbx, &listener, &intake.admission, refuse);
            return;
        };
        match accepted {
            Ok((stream, _peer)) => {
                backoff = Duration::from_millis(10);
                match intake.admission.decide(pbx) {
                    Decision::Serve(slot) => {
                        let services = intake.services.clone();
                        intake.calls.spawn(async move {
                            serve(stream, services).await;
                            drop(slot);
                        });
                    }
                    refused => hand_back(refused, stream, refuse),
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::error!(pbx = pbx.as_str(), error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Carries out a refusal: hands the connection back in a task of its own
/// while holding the refusal's permit, or, with none left, closes it.
fn hand_back<R, RFut>(refusal: Decision, stream: TcpStream, refuse: R)
where
    R: Fn(TcpStream) -> RFut + Send + 'static,
    RFut: Future<Output = ()> + Send + 'static,
{
    match refusal {
        Decision::Refuse {
            hand_back: Some(permit),
            ..
        } => {
            tokio::spawn(async move {
                refuse(stream).await;
                drop(permit);
            });
        }
        // Too many refusals under way already (or, never, a Serve).
        _ => drop(stream),
    }
}

/// On shutdown: connections the kernel already queued would be reset when
/// the listener closes; accept each one still waiting and hand it back to
/// the dialplan instead. (One arriving between the last look and the close
/// is still reset; the shipped FreeSWITCH dialplan's `socket_resume=true`
/// and Asterisk's AGISTATUS=FAILURE send it to the failover all the same.)
fn hand_back_backlog<R, RFut>(
    pbx: PbxKind,
    listener: &TcpListener,
    admission: &Admission,
    refuse: R,
) where
    R: Fn(TcpStream) -> RFut + Copy + Send + 'static,
    RFut: Future<Output = ()> + Send + 'static,
{
    // Whatever is queued now, without waiting for more.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    while let std::task::Poll::Ready(Ok((stream, _peer))) = listener.poll_accept(&mut cx) {
        hand_back(admission.refuse(pbx, Refusal::Draining), stream, refuse);
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn on_shutdown_calls_queued_in_the_backlog_are_handed_back_not_reset() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Three switch connections the kernel completed but nobody accepted.
        let mut queued = Vec::new();
        for _ in 0..3 {
            queued.push(TcpStream::connect(addr).await.expect("connect"));
        }
        let metrics = Arc::new(Metrics::new());
        let admission = Admission::new(10, metrics.clone());
        hand_back_backlog(
            PbxKind::Freeswitch,
            &listener,
            &admission,
            crate::pbx::freeswitch::refuse_connection,
        );
        drop(listener);
        for mut switch in queued {
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), switch.read_to_end(&mut got))
                .await
                .expect("handed back at once")
                .expect("read");
            assert_eq!(got, crate::pbx::freeswitch::HAND_BACK);
        }
        assert!(
            metrics.encode().contains(
                "bidbridge_calls_refused_total{pbx=\"freeswitch\",reason=\"draining\"} 3\n"
            )
        );
    }
}
