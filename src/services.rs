//! What every call shares: configuration, the catalog, the auctioneer, the
//! record sink, and the live-state gates. Built once by `run` (or by a test)
//! and handed to each call as an `Arc`.

use std::sync::Arc;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::auction::eligibility::Gate;
use crate::auction::health::{Health, HealthRules};
use crate::auction::{Auctioneer, NeutralScorer, Scorer};
use crate::catalog::Destination;
use crate::catalog::cache::CatalogCache;
use crate::config::Config;
use crate::ledger::writer::RecordSink;
use crate::metrics::Metrics;

pub struct Services {
    pub config: Config,
    pub catalog: Arc<CatalogCache>,
    pub auctioneer: Auctioneer,
    pub records: RecordSink,
    pub metrics: Arc<Metrics>,
    /// Destinations paused for leaving calls unanswered.
    pub health: Arc<Health>,
    /// Who called which campaign lately (duplicate-caller rules).
    pub recent: crate::screen::RecentCallers,
    /// Answer and payable rates for expected-value ranking.
    pub scorer: Arc<dyn Scorer>,
    /// Exact cross-node cap admission; `None` when the node runs without a
    /// database connection for caps (tests of the call path alone).
    pub caps: Option<Arc<crate::caps::Caps>>,
}

impl Services {
    /// Services with no live-state rules (every destination admitted, no
    /// history): what a node without caps runs, and the base for tests.
    pub fn new(
        config: Config,
        catalog: Arc<CatalogCache>,
        records: RecordSink,
        metrics: Arc<Metrics>,
    ) -> Services {
        let key = config.auction.caller_hash_key.as_bytes().to_vec();
        let health = Arc::new(Health::new(HealthRules {
            unanswered: config.auction.health_unanswered,
            window: Duration::from_secs(config.auction.health_window_secs),
            pause: Duration::from_secs(config.auction.health_pause_secs),
        }));
        Services {
            auctioneer: Auctioneer::new(config.auction.clone(), key),
            config,
            catalog,
            records,
            metrics,
            health,
            recent: crate::screen::RecentCallers::new(None),
            scorer: Arc::new(NeutralScorer),
            caps: None,
        }
    }

    /// Ranks by measured answer and payable rates where campaigns ask for it.
    pub fn with_scorer(mut self, scorer: Arc<dyn Scorer>) -> Services {
        self.scorer = scorer;
        self
    }

    /// Looks up earlier calls in PostgreSQL too (several nodes).
    pub fn with_database(mut self, pool: deadpool_postgres::Pool) -> Services {
        self.recent = crate::screen::RecentCallers::new(Some(pool));
        self
    }

    /// Enforces caps through `caps` (eligibility from its snapshot, exact
    /// admission before each ring).
    pub fn with_caps(mut self, caps: Arc<crate::caps::Caps>) -> Services {
        self.caps = Some(caps);
        self
    }
}

/// The live admission rules of one node: buyer health, then caps.
pub struct LiveGate<'a> {
    pub health: &'a Health,
    pub caps: Option<&'a crate::caps::Caps>,
}

impl Services {
    pub fn gate(&self) -> LiveGate<'_> {
        LiveGate {
            health: &self.health,
            caps: self.caps.as_deref(),
        }
    }
}

impl Gate for LiveGate<'_> {
    fn admit(&self, destination: &Destination, now: DateTime<Utc>) -> Result<(), &'static str> {
        self.health.admit(destination, now)?;
        match self.caps {
            Some(caps) => caps.admit_gate(destination, now),
            None => Ok(()),
        }
    }
}
