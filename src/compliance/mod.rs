//! Compliance: consent evidence, the do-not-call list and the sharing log
//! (docs/compliance.md).
//!
//! Owns: reading consent evidence from what the switch handed over
//! ([`consent`]), the DNC list's storage and CSV form ([`dnc`]), and
//! answering "who got this person's data?" from the sharing log
//! ([`sharing`]).
//!
//! Must never: treat an invalid value as evidence, offer a DNC caller to a
//! buyer, or put a query to the database on a call's path (the DNC list is
//! cached with the catalog; sharing rows ride the call record).

pub mod consent;
pub mod dnc;
pub mod sharing;
