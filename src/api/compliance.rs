//! Admin endpoints for compliance (docs/http-api.md, docs/compliance.md):
//! the do-not-call list, the sharing log for one caller, and one call's
//! record with its consent evidence.
//!
//! Must never: answer without the admin token, or serve a call record
//! without logging the read in the sharing log (a record carries the
//! caller's number).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{ApiState, require_admin};
use crate::compliance::{dnc, sharing};
use crate::phone::E164;

fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (
        status,
        axum::Json(json!({ "error": code, "message": message.to_string() })),
    )
        .into_response()
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e)
}

#[derive(Debug, Deserialize)]
pub struct DncQuery {
    number: Option<String>,
    format: Option<String>,
}

/// `GET /v1/dnc` (the list, JSON or `?format=csv`) or `?number=` (one entry or 404).
pub async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<DncQuery>,
) -> Response {
    if let Err(response) = require_admin(&state, &headers) {
        return *response;
    }
    let db = match state.pool.get().await {
        Ok(db) => db,
        Err(e) => return unavailable(e),
    };
    if let Some(number) = &query.number {
        let number = match dnc::parse_number(number) {
            Ok(n) => n,
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_number", e),
        };
        return match dnc::get(&**db, &number).await {
            Ok(Some(entry)) => axum::Json(entry).into_response(),
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                "not_listed",
                format!("{number} is not on the list"),
            ),
            Err(e) => unavailable(e),
        };
    }
    match dnc::list(&**db).await {
        Ok(entries) if query.format.as_deref() == Some("csv") => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            dnc::render_csv(&entries),
        )
            .into_response(),
        Ok(entries) => axum::Json(json!({ "numbers": entries })).into_response(),
        Err(e) => unavailable(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddRequest {
    number: String,
    #[serde(default)]
    source: Option<String>,
}

/// `POST /v1/dnc` `{"number": "+1...", "source": "..."}`: 201 when added,
/// 200 when already listed.
pub async fn add(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(response) = require_admin(&state, &headers) {
        return *response;
    }
    let request: AddRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_json", e),
    };
    let number = match dnc::parse_number(&request.number) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_number", e),
    };
    let source = match dnc::parse_source(request.source.as_deref().unwrap_or("api")) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_source", e),
    };
    let db = match state.pool.get().await {
        Ok(db) => db,
        Err(e) => return unavailable(e),
    };
    let entry = dnc::DncEntry {
        number: number.to_string(),
        source,
        added_at: chrono::Utc::now(),
    };
    match dnc::insert(&**db, std::slice::from_ref(&entry)).await {
        Ok(1) => (StatusCode::CREATED, axum::Json(entry)).into_response(),
        Ok(_) => (
            StatusCode::OK,
            axum::Json(json!({ "number": entry.number, "already_listed": true })),
        )
            .into_response(),
        Err(e) => unavailable(e),
    }
}

/// `DELETE /v1/dnc/{number}`: 204, or 404 when not listed.
pub async fn remove(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Response {
    if let Err(response) = require_admin(&state, &headers) {
        return *response;
    }
    let number = match dnc::parse_number(&number) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_number", e),
    };
    let db = match state.pool.get().await {
        Ok(db) => db,
        Err(e) => return unavailable(e),
    };
    match dnc::remove(&**db, &number).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "not_listed",
            format!("{number} is not on the list"),
        ),
        Err(e) => unavailable(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct SharingQuery {
    caller: String,
}

/// `GET /v1/sharing?caller=+1...`: who got this caller's data.
pub async fn for_caller(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<SharingQuery>,
) -> Response {
    if let Err(response) = require_admin(&state, &headers) {
        return *response;
    }
    let Some(number) = E164::normalize(&query.caller) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_number",
            "caller is not a phone number",
        );
    };
    let db = match state.pool.get().await {
        Ok(db) => db,
        Err(e) => return unavailable(e),
    };
    match sharing::for_caller(&**db, &number).await {
        Ok(rows) => axum::Json(json!({
            "caller": number.as_str(),
            "parties": sharing::parties(&rows).into_iter()
                .map(|(kind, id)| json!({"kind": kind, "id": id})).collect::<Vec<_>>(),
            "rows": rows,
        }))
        .into_response(),
        Err(e) => unavailable(e),
    }
}

/// `GET /v1/calls/{call_id}`: one call's record with its consent evidence.
/// The read is itself a share (the record holds the caller's number), so
/// it is logged first; no log row, no record.
pub async fn call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
) -> Response {
    if let Err(response) = require_admin(&state, &headers) {
        return *response;
    }
    let Ok(call_id) = Uuid::parse_str(&call_id) else {
        return error(StatusCode::BAD_REQUEST, "bad_call_id", "not a UUID");
    };
    let db = match state.pool.get().await {
        Ok(db) => db,
        Err(e) => return unavailable(e),
    };
    let row = match db
        .query_opt(
            "SELECT caller, campaign_id, publisher_id, source, disposition, arrived_at, winner_buyer_id,
                    (SELECT min(seq) FROM consent_records r WHERE r.call_id = c.call_id)
             FROM calls c WHERE call_id = $1",
            &[&call_id],
        )
        .await
    {
        Ok(Some(row)) => row,
        Ok(None) => return error(StatusCode::NOT_FOUND, "unknown_call", "no such call"),
        Err(e) => return unavailable(e),
    };
    let consent_seq: Option<i16> = row.try_get(7).ok().flatten();
    let fields = vec![
        "number",
        "campaign",
        "publisher",
        "source",
        "disposition",
        "consents",
    ];
    // seq: the next free one; a concurrent read taking it makes this
    // insert a no-op, so try again.
    let mut logged = false;
    for _ in 0..5 {
        match db
            .execute(
                "INSERT INTO sharing_log (call_id, seq, channel, party_kind, party_id, fields, consent_seq, shared_at)
                 SELECT $1, coalesce(max(seq) + 1, 0), 'api', 'admin', 'admin-api', $2::text[], $3, now()
                 FROM sharing_log WHERE call_id = $1
                 ON CONFLICT (call_id, seq) DO NOTHING",
                &[&call_id, &fields, &consent_seq],
            )
            .await
        {
            Ok(1) => {
                logged = true;
                break;
            }
            Ok(_) => continue,
            Err(e) => return unavailable(e),
        }
    }
    if !logged {
        return unavailable("could not log the read in the sharing log; try again");
    }
    let consents = match db
        .query(
            "SELECT seq, kind, reference, prompt, key_pressed, page, consented_at, captured_at
             FROM consent_records WHERE call_id = $1 ORDER BY seq",
            &[&call_id],
        )
        .await
    {
        Ok(rows) => rows
            .iter()
            .map(|r| {
                json!({
                    "seq": r.try_get::<_, i16>(0).ok(),
                    "kind": r.try_get::<_, String>(1).ok(),
                    "reference": r.try_get::<_, Option<String>>(2).ok().flatten(),
                    "prompt": r.try_get::<_, Option<String>>(3).ok().flatten(),
                    "key_pressed": r.try_get::<_, Option<String>>(4).ok().flatten(),
                    "page": r.try_get::<_, Option<String>>(5).ok().flatten(),
                    "consented_at": r.try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(6).ok().flatten(),
                    "captured_at": r.try_get::<_, chrono::DateTime<chrono::Utc>>(7).ok(),
                })
            })
            .collect::<Vec<_>>(),
        Err(e) => return unavailable(e),
    };
    let text = |i: usize| row.try_get::<_, Option<String>>(i).ok().flatten();
    axum::Json(json!({
        "call_id": call_id,
        "caller": text(0),
        "campaign": text(1),
        "publisher": text(2),
        "source": text(3),
        "disposition": row.try_get::<_, String>(4).ok(),
        "arrived_at": row.try_get::<_, chrono::DateTime<chrono::Utc>>(5).ok(),
        "winner_buyer": text(6),
        "consent_id": consents.iter().find_map(|c| c["reference"].as_str().map(str::to_string)),
        "consents": consents,
    }))
    .into_response()
}
