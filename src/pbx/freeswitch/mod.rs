//! FreeSWITCH: the outbound Event Socket adapter.
//!
//! The dialplan hands a call to us with `socket 127.0.0.1:8084 async full`
//! (dialplan/freeswitch/bidbridge.xml); each accepted connection is one
//! call, driven by [`session::FsChannel`] through the shared call flow.
//! [`wire`] holds the pure pieces (dial strings, argument formats, the
//! reading of bridge results).

pub mod session;
pub mod wire;

use std::sync::Arc;

use freeswitch_esl_tokio::{EslClient, EslConnectOptions};
use tokio::net::TcpStream;

use crate::services::Services;

/// Serves one outbound connection from FreeSWITCH: session set-up, then the
/// call flow.
pub async fn serve_connection(stream: TcpStream, services: Arc<Services>) {
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (client, events) =
        EslClient::accept_outbound_stream_with_options(stream, EslConnectOptions::new());
    match session::FsChannel::establish(client, events, services.config.freeswitch.clone()).await {
        Ok(channel) => crate::flow::handle_call(channel, services).await,
        Err(e) => {
            tracing::warn!(peer, error = %e, "FreeSWITCH session set-up failed; the dialplan's failover path takes the call")
        }
    }
}
