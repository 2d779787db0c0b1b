//! Recent callers, for campaigns' duplicate-caller rules.
//!
//! "Did a buyer take this caller in this campaign within the window, and
//! which one?" is answered from this node's memory first (every call it settled)
//! and otherwise from the call records in PostgreSQL, so a repeat caller is
//! recognised whichever node took the first call. The database lookup is
//! bounded (150 ms); if it fails the caller is treated as new, so an outage
//! never blocks routing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use moka::sync::Cache;

/// The caller's previous call in the campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    pub at: DateTime<Utc>,
    /// The destination that took that call, if one did.
    pub destination: Option<String>,
}

pub struct RecentCallers {
    /// (campaign, caller E.164) → the latest call this node settled.
    memory: Cache<(String, String), Previous>,
    pool: Option<Pool>,
}

const LOOKUP_LIMIT: Duration = Duration::from_millis(150);

impl RecentCallers {
    pub fn new(pool: Option<Pool>) -> RecentCallers {
        RecentCallers {
            // Windows are typically a day; two cover any sane rule.
            memory: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(48 * 3600))
                .build(),
            pool,
        }
    }

    pub async fn previous(
        &self,
        campaign: &str,
        caller: &str,
        window: Duration,
    ) -> Option<Previous> {
        let since = Utc::now()
            - chrono::Duration::from_std(window).unwrap_or_else(|_| chrono::Duration::days(1));
        if let Some(found) = self.memory.get(&(campaign.to_string(), caller.to_string()))
            && found.at >= since
        {
            return Some(found);
        }
        let pool = self.pool.as_ref()?;
        let lookup = async {
            let client = pool.get().await.ok()?;
            let row = client
                .query_opt(
                    "SELECT arrived_at, winner_destination_id FROM calls
                      WHERE campaign_id = $1 AND caller = $2 AND arrived_at >= $3
                        AND winner_destination_id IS NOT NULL
                      ORDER BY arrived_at DESC LIMIT 1",
                    &[&campaign, &caller, &since],
                )
                .await
                .ok()??;
            Some(Previous {
                at: row.get(0),
                destination: row.get(1),
            })
        };
        tokio::time::timeout(LOOKUP_LIMIT, lookup)
            .await
            .ok()
            .flatten()
    }

    pub fn remember(
        &self,
        campaign: &str,
        caller: &str,
        destination: Option<String>,
        at: DateTime<Utc>,
    ) {
        self.memory.insert(
            (campaign.to_string(), caller.to_string()),
            Previous { at, destination },
        );
    }
}
