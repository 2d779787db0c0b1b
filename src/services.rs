//! What every call shares: configuration, the catalog, the auctioneer, the
//! record sink, and the live-state gates. Built once by `run` (or by a test)
//! and handed to each call as an `Arc`.

use std::sync::Arc;

use crate::auction::eligibility::{Gate, OpenGate};
use crate::auction::{Auctioneer, NeutralScorer, Scorer};
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
    /// Caps, concurrency, budgets and buyer health, answered from memory.
    pub gate: Arc<dyn Gate>,
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
        Services {
            auctioneer: Auctioneer::new(config.auction.clone(), key),
            config,
            catalog,
            records,
            metrics,
            gate: Arc::new(OpenGate),
            scorer: Arc::new(NeutralScorer),
            caps: None,
        }
    }

    /// Ranks by measured answer and payable rates where campaigns ask for it.
    pub fn with_scorer(mut self, scorer: Arc<dyn Scorer>) -> Services {
        self.scorer = scorer;
        self
    }

    /// Enforces caps through `caps` (eligibility from its snapshot, exact
    /// admission before each ring).
    pub fn with_caps(mut self, caps: Arc<crate::caps::Caps>) -> Services {
        self.gate = caps.clone();
        self.caps = Some(caps);
        self
    }
}
