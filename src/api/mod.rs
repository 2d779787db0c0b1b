//! The HTTP API: health, readiness, metrics, and the admin, report and
//! conversion endpoints (docs/http-api.md).
//!
//! Everything here is off the call path. Request bodies are limited
//! (`http.max_body_bytes`), admin endpoints need the admin token, buyer
//! endpoints a buyer token; tokens are compared by hash in constant time.

pub mod auth;
pub mod compliance;
pub mod conversions;
pub mod reports;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::server::DaemonState;
use crate::services::Services;

#[derive(Clone)]
pub struct ApiState {
    pub services: Arc<Services>,
    pub pool: deadpool_postgres::Pool,
    pub daemon: Arc<DaemonState>,
}

pub fn router(state: ApiState) -> Router {
    let limit = state.services.config.http.max_body_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/conversions", post(conversions::post))
        .route("/v1/reports/{by}", get(reports::get))
        .route("/v1/dnc", get(compliance::list).post(compliance::add))
        .route("/v1/dnc/{number}", delete(compliance::remove))
        .route("/v1/sharing", get(compliance::for_caller))
        .route("/v1/calls/{call_id}", get(compliance::call))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}

pub async fn serve(
    listener: TcpListener,
    services: Arc<Services>,
    pool: deadpool_postgres::Pool,
    daemon: Arc<DaemonState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = router(ApiState {
        services,
        pool,
        daemon,
    });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP API stopped");
    }
}

/// The process is alive and serving HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready to take calls: catalog loaded, listeners up, records safe, not draining.
async fn readyz(State(state): State<ApiState>) -> Response {
    let mut problems = Vec::new();
    if !state.services.catalog.is_loaded() {
        problems.push("catalog not loaded");
    }
    if !*state.daemon.listening.borrow() {
        problems.push("call listeners not started");
    }
    if *state.daemon.draining.borrow() {
        problems.push("draining for shutdown");
    }
    if !state.services.records.stats().healthy() {
        problems.push("record journal full or failing");
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join(", ")),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let services = &state.services;
    let stats = services.records.stats();
    let m = &services.metrics;
    m.journal_depth
        .set(stats.journal_depth.load(Ordering::Relaxed) as i64);
    m.journal_bytes
        .set(stats.journal_bytes.load(Ordering::Relaxed) as i64);
    m.records_written.set(
        (stats.written.load(Ordering::Relaxed) + stats.replayed.load(Ordering::Relaxed)) as i64,
    );
    m.records_dropped
        .set(stats.dropped.load(Ordering::Relaxed) as i64);
    let paused = services.health.paused();
    for campaign in services.catalog.campaigns() {
        for destination in &campaign.destinations {
            let is_paused = paused.iter().any(|(id, _)| *id == destination.id);
            m.destination_paused
                .get_or_create(&crate::metrics::DestinationLabel {
                    destination: destination.id.clone(),
                })
                .set(i64::from(is_paused));
        }
    }
    m.records_queue_depth
        .set(stats.queue_depth.load(Ordering::Relaxed) as i64);
    m.records_queue_max_depth
        .set(stats.queue_max_depth.load(Ordering::Relaxed) as i64);
    if let Some(at) = services.catalog.status().loaded_at {
        m.catalog_age_seconds
            .set((chrono::Utc::now() - at).num_milliseconds() as f64 / 1000.0);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

/// Checks the admin token; `Err` is the response to send.
pub fn require_admin(state: &ApiState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(expected) = &state.services.config.http.admin_token_sha256 else {
        return Err(Box::new(
            (
                StatusCode::FORBIDDEN,
                "admin API disabled: set http.admin_token_sha256\n",
            )
                .into_response(),
        ));
    };
    let presented = auth::bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    match presented {
        Some(token) if auth::verify(token, expected) => Ok(()),
        _ => Err(Box::new(
            (StatusCode::UNAUTHORIZED, "missing or wrong admin token\n").into_response(),
        )),
    }
}

/// The loaded catalog and the node's state (admin).
async fn status(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(response) = require_admin(&state, &headers) {
        return *response;
    }
    let catalog = state.services.catalog.status();
    let stats = state.services.records.stats();
    let body = serde_json::json!({
        "node": state.services.config.node.id,
        "draining": *state.daemon.draining.borrow(),
        "sessions": state.services.metrics.open_sessions(),
        "paused_destinations": state.services.health.paused().into_iter()
            .map(|(id, secs)| serde_json::json!({"destination": id, "resumes_in_secs": secs}))
            .collect::<Vec<_>>(),
        "catalog": {
            "loaded_at": catalog.loaded_at,
            "generation": catalog.generation,
            "numbers": catalog.numbers,
            "campaigns": catalog.campaigns,
            "buyers": catalog.buyers,
            "destinations": catalog.destinations,
            "last_error": catalog.last_error,
        },
        "records": {
            "written": stats.written.load(Ordering::Relaxed),
            "replayed": stats.replayed.load(Ordering::Relaxed),
            "journal_depth": stats.journal_depth.load(Ordering::Relaxed),
            "journal_bytes": stats.journal_bytes.load(Ordering::Relaxed),
            "queue_depth": stats.queue_depth.load(Ordering::Relaxed),
            "queue_max_depth": stats.queue_max_depth.load(Ordering::Relaxed),
            "database_down": stats.db_down.load(Ordering::Relaxed),
        },
    });
    axum::Json(body).into_response()
}
