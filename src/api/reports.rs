//! `GET /v1/reports/{by}` (admin): the same grouped reports as `bidbridge
//! report --by`, as JSON or CSV, and `GET /v1/reports/calls?last=N` for the
//! recent-calls listing.
//!
//! Must never: answer without the admin token, or build SQL from the
//! request (the grouping is parsed into [`GroupBy`] first).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiState, require_admin};
use crate::report::{self, Format, GroupBy};

#[derive(Debug, Deserialize)]
pub struct ReportQuery {
    since: Option<String>,
    until: Option<String>,
    format: Option<String>,
    last: Option<i64>,
}

fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (
        status,
        axum::Json(json!({ "error": code, "message": message.to_string() })),
    )
        .into_response()
}

pub async fn get(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(by): Path<String>,
    Query(query): Query<ReportQuery>,
) -> Response {
    if let Err(response) = require_admin(&state, &headers) {
        return *response;
    }
    let db = match state.pool.get().await {
        Ok(db) => db,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e),
    };
    if by == "calls" {
        let last = query.last.unwrap_or(20).clamp(1, 10_000);
        return match report::recent_calls(&db, last).await {
            Ok(lines) => axum::Json(json!({ "calls": lines })).into_response(),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e),
        };
    }
    let by: GroupBy = match by.parse() {
        Ok(by) => by,
        Err(e) => return error(StatusCode::NOT_FOUND, "unknown_report", e),
    };
    let format = match query.format.as_deref().unwrap_or("json").parse::<Format>() {
        Ok(Format::Table) | Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_format",
                "format must be json or csv",
            );
        }
        Ok(f) => f,
    };
    let now = chrono::Utc::now();
    let since = match report::parse_since(query.since.as_deref().unwrap_or("24h"), now) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_since", e),
    };
    let until = match query.until.as_deref().map(|u| report::parse_since(u, now)) {
        None => now,
        Some(Ok(t)) => t,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, "bad_until", e),
    };
    match report::build(&db, by, since, until).await {
        Ok(r) if format == Format::Csv => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            r.render(Format::Csv),
        )
            .into_response(),
        Ok(r) => axum::Json(r.to_json()).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e),
    }
}
