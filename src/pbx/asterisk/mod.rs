//! Asterisk: the FastAGI adapter.

pub mod codec;
