//! Asterisk: the FastAGI adapter.
//!
//! The dialplan hands a call to us with `AGI(agi://127.0.0.1:4573/route)`
//! (dialplan/asterisk/extensions_bidbridge.conf); each accepted connection
//! is one call, driven by [`session::AgiChannel`] through the shared call
//! flow. [`codec`] holds the wire grammar, [`dial`] the dial strings.
//!
//! What this adapter must never do: pipeline commands, send anything while
//! `EXEC Dial` runs, splice unvalidated text into a command line, or leave
//! a session open after the call (Asterisk does not close it on hang-up).
//! The wire facts it relies on, and the limits of what AGI can do (no
//! switch-side timer, where talk time comes from), are in docs/asterisk.md.

pub mod codec;
pub mod dial;
pub mod session;

#[cfg(test)]
mod replay_tests;

use std::sync::Arc;

use tokio::net::TcpStream;

use crate::services::Services;

/// Serves one FastAGI connection from Asterisk: preamble, then the call flow.
pub async fn serve_connection(stream: TcpStream, services: Arc<Services>) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    match session::AgiChannel::establish(stream, services.config.asterisk.clone()).await {
        Ok(channel) => crate::flow::handle_call(channel, services).await,
        Err(e) => {
            // Dropping the stream closes it: AGI() ends, and the dialplan's
            // guard sends the caller to the backup line.
            tracing::warn!(peer, error = %e, "FastAGI session set-up failed; the dialplan's failover path takes the call")
        }
    }
}
