//! "Who got this person's data?": reading the sharing log.
//!
//! The rows are written elsewhere — by the record writer with the call
//! ([`crate::ledger::store`]), by the API when it serves a call record —
//! this module only reads them, matched on the caller's E.164 number.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::phone::E164;

/// One time caller data left the daemon.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SharingRow {
    pub call_id: Uuid,
    pub arrived_at: DateTime<Utc>,
    pub seq: i16,
    pub channel: String,
    pub party_kind: String,
    pub party_id: String,
    pub destination_id: Option<String>,
    pub fields: Vec<String>,
    /// `kind:reference` (or `ivr:prompt`) of the consent relied on.
    pub consent: Option<String>,
    pub shared_at: DateTime<Utc>,
}

/// Every sharing row of every call from `caller`, oldest first.
pub async fn for_caller(
    db: &impl GenericClient,
    caller: &E164,
) -> Result<Vec<SharingRow>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT s.call_id, c.arrived_at, s.seq, s.channel, s.party_kind, s.party_id, s.destination_id,
                    s.fields, r.kind || ':' || coalesce(r.reference, r.prompt, ''), s.shared_at
             FROM sharing_log s
             JOIN calls c ON c.call_id = s.call_id
             LEFT JOIN consent_records r ON r.call_id = s.call_id AND r.seq = s.consent_seq
             WHERE c.caller = $1::text
             ORDER BY c.arrived_at, s.call_id, s.seq",
            &[&caller.as_str()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(SharingRow {
                call_id: r.try_get(0)?,
                arrived_at: r.try_get(1)?,
                seq: r.try_get(2)?,
                channel: r.try_get(3)?,
                party_kind: r.try_get(4)?,
                party_id: r.try_get(5)?,
                destination_id: r.try_get(6)?,
                fields: r.try_get(7)?,
                consent: r.try_get(8)?,
                shared_at: r.try_get(9)?,
            })
        })
        .collect()
}

/// The distinct parties in `rows` (kind, id), in first-seen order.
pub fn parties(rows: &[SharingRow]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in rows {
        let party = (r.party_kind.clone(), r.party_id.clone());
        if !out.contains(&party) {
            out.push(party);
        }
    }
    out
}

/// A plain-text answer: the parties first, then every row.
pub fn render(caller: &E164, rows: &[SharingRow]) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str(&format!("no data of {caller} has left the daemon\n"));
        return out;
    }
    let parties = parties(rows);
    out.push_str(&format!(
        "data of {caller} went to {} part(ies):\n",
        parties.len()
    ));
    for (kind, id) in &parties {
        out.push_str(&format!("  {kind} {id}\n"));
    }
    out.push_str("\nshared_at             call_id                               channel  party              fields  consent\n");
    for r in rows {
        out.push_str(&format!(
            "{}  {}  {:<7}  {:<17}  {}  {}\n",
            r.shared_at.format("%Y-%m-%d %H:%M:%S"),
            r.call_id,
            r.channel,
            format!("{} {}", r.party_kind, r.party_id),
            r.fields.join(","),
            r.consent.as_deref().unwrap_or("none"),
        ));
    }
    out
}
