//! `POST /v1/conversions`: a buyer reports what became of a call it won
//! (docs/buyer-protocol.md "Conversions", docs/http-api.md).
//!
//! Owns: the buyer's token check (against the in-memory catalog's
//! `api_token_sha256`, in constant time), validating the report, storing it
//! in `conversions` idempotently on `(buyer, key)`, and enqueueing the
//! conversion postbacks in the same transaction.
//!
//! Must never: log or echo a token, accept a report for a call the buyer
//! did not win, turn a value into a float on the way to the database, or
//! store a report twice under one key.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::ApiState;
use super::auth;
use crate::ledger::outbox::{self, CallFacts};
use crate::money::{Cents, MoneyError};

/// Longest `event` and `key` accepted: they are labels, not documents.
const MAX_EVENT_LEN: usize = 64;
const MAX_KEY_LEN: usize = 200;

/// Why a conversion was refused; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    #[error("missing or wrong buyer token (Authorization: Bearer <token>)")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is too large")]
    TooLarge,
    #[error("{0}")]
    Unprocessable(String),
    #[error("no such call")]
    UnknownCall,
    #[error("this call was not won by your account")]
    NotYours,
    #[error("the database is unavailable; retry later")]
    Unavailable,
}

impl ConversionError {
    fn status(&self) -> StatusCode {
        match self {
            ConversionError::Unauthorized => StatusCode::UNAUTHORIZED,
            ConversionError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConversionError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ConversionError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ConversionError::UnknownCall => StatusCode::NOT_FOUND,
            ConversionError::NotYours => StatusCode::FORBIDDEN,
            ConversionError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ConversionError::Unauthorized => "unauthorized",
            ConversionError::BadRequest(_) => "bad_request",
            ConversionError::TooLarge => "too_large",
            ConversionError::Unprocessable(_) => "invalid_value",
            ConversionError::UnknownCall => "unknown_call",
            ConversionError::NotYours => "not_your_call",
            ConversionError::Unavailable => "unavailable",
        }
    }
}

impl From<tokio_postgres::Error> for ConversionError {
    fn from(e: tokio_postgres::Error) -> Self {
        tracing::error!(error = %e, "conversion: database error");
        ConversionError::Unavailable
    }
}

impl From<deadpool_postgres::PoolError> for ConversionError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        tracing::error!(error = %e, "conversion: database unreachable");
        ConversionError::Unavailable
    }
}

impl IntoResponse for ConversionError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.code(), "message": self.to_string() });
        (self.status(), axum::Json(body)).into_response()
    }
}

/// A validated report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionReport {
    pub call: CallRef,
    pub event: String,
    pub value: Cents,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallRef {
    CallId(Uuid),
    BidId(String),
}

/// Parses and validates a request body (pure; unit-tested).
pub fn parse_report(body: &[u8]) -> Result<ConversionReport, ConversionError> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| ConversionError::BadRequest(format!("body is not valid JSON: {e}")))?;
    let Value::Object(fields) = doc else {
        return Err(ConversionError::BadRequest(
            "body must be a JSON object".into(),
        ));
    };
    let text = |name: &str, max: usize| -> Result<Option<String>, ConversionError> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Err(ConversionError::BadRequest(
                format!("`{name}` must not be empty"),
            )),
            Some(Value::String(s)) if s.len() > max => Err(ConversionError::BadRequest(format!(
                "`{name}` is longer than {max} bytes"
            ))),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(ConversionError::BadRequest(format!(
                "`{name}` must be a string"
            ))),
        }
    };
    let call = match (text("call_id", 64)?, text("bid_id", 256)?) {
        (Some(_), Some(_)) => {
            return Err(ConversionError::BadRequest(
                "give `call_id` or `bid_id`, not both".into(),
            ));
        }
        (Some(id), None) => CallRef::CallId(
            Uuid::parse_str(&id)
                .map_err(|_| ConversionError::BadRequest("`call_id` is not a UUID".into()))?,
        ),
        (None, Some(bid)) => CallRef::BidId(bid),
        (None, None) => {
            return Err(ConversionError::BadRequest(
                "missing `call_id` (or `bid_id`)".into(),
            ));
        }
    };
    let event = text("event", MAX_EVENT_LEN)?
        .ok_or_else(|| ConversionError::BadRequest("missing `event`".into()))?;
    let key = text("key", MAX_KEY_LEN)?
        .ok_or_else(|| ConversionError::BadRequest("missing `key`".into()))?;
    let value = match fields.get("value") {
        None | Some(Value::Null) => {
            return Err(ConversionError::BadRequest("missing `value`".into()));
        }
        Some(Value::Number(n)) => parse_value(&n.to_string())?,
        Some(Value::String(s)) => parse_value(s)?,
        Some(_) => {
            return Err(ConversionError::BadRequest(
                "`value` must be a number in major units, e.g. 120.50".into(),
            ));
        }
    };
    Ok(ConversionReport {
        call,
        event,
        value,
        key,
    })
}

/// A value in major units, exactly: the JSON number's own text is parsed
/// as a decimal, so `120.1` is 12010 cents and never 12009.
fn parse_value(text: &str) -> Result<Cents, ConversionError> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(ConversionError::Unprocessable(
            "`value` must not be negative".into(),
        ));
    }
    match text.parse::<Cents>() {
        Ok(c) => Ok(c),
        Err(MoneyError::TooPrecise(_)) => Err(ConversionError::Unprocessable(
            "`value` has more than 2 decimals (sub-cent amounts cannot be invoiced)".into(),
        )),
        Err(MoneyError::Overflow(_)) => Err(ConversionError::Unprocessable(
            "`value` is too large".into(),
        )),
        // Exponent forms (1e3) arrive here; anything not finite is refused.
        Err(MoneyError::Malformed(_)) => match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Cents::from_decimal_f64(f).ok_or_else(|| {
                ConversionError::Unprocessable(
                    "`value` must be a non-negative amount with at most 2 decimals".into(),
                )
            }),
            _ => Err(ConversionError::Unprocessable(
                "`value` is not a number".into(),
            )),
        },
    }
}

/// The buyer whose token this is, if any. Every buyer with a token is
/// checked (no early exit on a match), so timing says nothing about which.
fn authenticate(state: &ApiState, headers: &HeaderMap) -> Result<String, ConversionError> {
    let presented = auth::bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
    .ok_or(ConversionError::Unauthorized)?;
    let mut found = None;
    for buyer in state.services.catalog.buyers() {
        if let Some(hash) = &buyer.api_token_sha256
            && auth::verify(presented, hash)
            && found.is_none()
        {
            found = Some(buyer.id.clone());
        }
    }
    found.ok_or(ConversionError::Unauthorized)
}

pub async fn post(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle(&state, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: &ApiState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ConversionError> {
    let buyer = authenticate(state, headers)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ConversionError::TooLarge
        } else {
            ConversionError::BadRequest(rejection.body_text())
        }
    })?;
    let report = parse_report(&body)?;

    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let call_id = match &report.call {
        CallRef::CallId(id) => *id,
        CallRef::BidId(bid) => {
            // Bid ids are the buyer's own: look only among its bids, the
            // call it won first.
            let row = tx
                .query_opt(
                    "SELECT b.call_id FROM bids b JOIN calls c USING (call_id)
                     WHERE b.bid_id = $1 AND b.buyer_id = $2
                     ORDER BY (c.winner_buyer_id IS NOT DISTINCT FROM $2) DESC, c.arrived_at DESC
                     LIMIT 1",
                    &[bid, &buyer],
                )
                .await?
                .ok_or(ConversionError::UnknownCall)?;
            row.try_get(0)?
        }
    };
    let call = tx
        .query_opt(
            "SELECT winner_buyer_id, campaign_id, publisher_id, source, talk_ms, payable, revenue_cents,
                    payout_cents, winner_destination_id, winner_bid_id, price_bid_cents, price_charged_cents,
                    (SELECT reference FROM consent_records r
                      WHERE r.call_id = c.call_id AND reference IS NOT NULL ORDER BY seq LIMIT 1)
             FROM calls c WHERE call_id = $1",
            &[&call_id],
        )
        .await?
        .ok_or(ConversionError::UnknownCall)?;
    let winner: Option<String> = call.try_get(0)?;
    if winner.as_deref() != Some(buyer.as_str()) {
        return Err(ConversionError::NotYours);
    }

    let inserted = tx
        .query_opt(
            "INSERT INTO conversions (call_id, buyer_id, event, value_cents, idempotency_key)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (buyer_id, idempotency_key) DO NOTHING
             RETURNING id, call_id, event, value_cents, received_at",
            &[
                &call_id,
                &buyer,
                &report.event,
                &report.value.0,
                &report.key,
            ],
        )
        .await?;
    let (status, row) = match inserted {
        Some(row) => {
            let id: i64 = row.try_get(0)?;
            let talk_ms: Option<i64> = call.try_get(4)?;
            let facts = CallFacts {
                call_id,
                campaign: call.try_get(1)?,
                publisher: call.try_get(2)?,
                source: call.try_get(3)?,
                talk_ms: talk_ms.map(|t| u64::try_from(t).unwrap_or(0)),
                payable: call.try_get(5)?,
                revenue: Cents(call.try_get(6)?),
                payout: Cents(call.try_get(7)?),
                winner_buyer: winner.clone(),
                winner_destination: call.try_get(8)?,
                winner_bid_id: call.try_get(9)?,
                price_bid: call.try_get::<_, Option<i64>>(10)?.map(Cents),
                price_charged: call.try_get::<_, Option<i64>>(11)?.map(Cents),
                consent_id: call.try_get(12)?,
            };
            let publishers: Vec<&str> = facts.publisher.as_deref().into_iter().collect();
            let urls = outbox::catalog_urls(&tx, &publishers, &[buyer.as_str()]).await?;
            let pending = outbox::notices_for_conversion(
                &facts,
                id,
                &buyer,
                &report.event,
                report.value,
                &urls,
            );
            outbox::insert(&tx, &pending).await?;
            (StatusCode::CREATED, row)
        }
        None => {
            // Same key again: the first report stands, whatever this one says.
            let row = tx
                .query_one(
                    "SELECT id, call_id, event, value_cents, received_at FROM conversions
                     WHERE buyer_id = $1 AND idempotency_key = $2",
                    &[&buyer, &report.key],
                )
                .await?;
            (StatusCode::OK, row)
        }
    };
    tx.commit().await?;

    let id: i64 = row.try_get(0)?;
    let stored_call: Uuid = row.try_get(1)?;
    let event: String = row.try_get(2)?;
    let value = Cents(row.try_get(3)?);
    let received_at: DateTime<Utc> = row.try_get(4)?;
    let duplicate = status == StatusCode::OK;
    tracing::info!(buyer = %buyer, call_id = %stored_call, conversion = id, event = %event, duplicate, "conversion reported");
    let body = json!({
        "id": id,
        "call_id": stored_call,
        "buyer": buyer,
        "event": event,
        "value": value.to_string(),
        "value_cents": value.0,
        "key": report.key,
        "received_at": received_at,
        "duplicate": duplicate,
    });
    Ok((status, axum::Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(body: &str) -> StatusCode {
        match parse_report(body.as_bytes()) {
            Ok(_) => StatusCode::OK,
            Err(e) => e.status(),
        }
    }

    #[test]
    fn values_are_exact_and_validated() {
        let ok = parse_report(
            br#"{"call_id":"5c6f9a55-3d0c-4b44-a5a6-7c4cbb1f3c2e","event":"sale","value":120.1,"key":"k"}"#,
        )
        .unwrap();
        assert_eq!(ok.value, Cents(12010));
        let body = |v: &str| {
            format!(
                r#"{{"call_id":"5c6f9a55-3d0c-4b44-a5a6-7c4cbb1f3c2e","event":"sale","value":{v},"key":"k"}}"#
            )
        };
        assert_eq!(status(&body("\"12.50\"")), StatusCode::OK);
        assert_eq!(status(&body("1e2")), StatusCode::OK);
        assert_eq!(status(&body("-1")), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status(&body("1.005")), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status(&body("\"NaN\"")), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status(&body("true")), StatusCode::BAD_REQUEST);
        assert_eq!(status(&body("null")), StatusCode::BAD_REQUEST);
        assert_eq!(status("{"), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(r#"{"event":"sale","value":1,"key":"k"}"#),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(r#"{"call_id":"nope","event":"sale","value":1,"key":"k"}"#),
            StatusCode::BAD_REQUEST
        );
    }
}
