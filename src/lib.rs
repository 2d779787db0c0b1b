//! bidbridge: real-time call auctions beside the operator's own FreeSWITCH
//! or Asterisk.
//!
//! A call arrives from the switch (outbound Event Socket or FastAGI), is
//! identified by its tracking number, screened, qualified through an IVR,
//! auctioned to buyers in parallel within a deadline, bridged to the winner
//! with fall-through to the next bidders and a backup line, and settled into
//! a call record. See `docs/architecture.md` for the map of modules.

pub mod admission;
pub mod api;
pub mod attestation;
pub mod auction;
pub mod bench;
pub mod caps;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod compliance;
pub mod config;
pub mod db;
pub mod flow;
pub mod fraud;
pub mod geo;
pub mod http_client;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod money;
pub mod pbx;
pub mod phone;
pub mod purge;
pub mod report;
pub mod screen;
pub mod server;
pub mod services;
pub mod simulate;
pub mod template;
