//! `bidbridge simulate`: a built-in switch simulator (FreeSWITCH outbound
//! ESL and Asterisk FastAGI) and loopback buyer servers, driven by a
//! scenario file. The engine of the demo, the integration tests and the
//! benchmarks, so it must stay faithful to the recorded wire traffic.

pub mod asterisk;
pub mod scenario;
