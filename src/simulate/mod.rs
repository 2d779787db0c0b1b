//! `bidbridge simulate`: a built-in switch simulator (FreeSWITCH outbound
//! ESL) and loopback buyer servers, driven by a scenario file. The engine of
//! the demo, the integration tests and the benchmarks, so it must stay
//! faithful to the recorded wire traffic (`shared/fixtures/esl/`).
//!
//! It must never reach beyond loopback: the fake switch only dials the ESL
//! address it is given, and buyer servers refuse non-loopback addresses.

pub mod buyers;
pub mod freeswitch;
pub mod scenario;
