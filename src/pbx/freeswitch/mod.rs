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

/// What a refused connection is told (see [`super::handback`]), two
/// commands in one write. mod_event_socket reads commands a byte at a time,
/// so they arrive as two. `connect` comes first because the outbound
/// listener answers only `connect` among first commands (another first
/// command runs, but its reply is dropped), and because it sets the flag
/// that lets the `socket` application park the channel instead of spinning
/// in its wait-for-connect loop. `resume` sets `socket_resume=true`: when
/// our half-close reaches the listener, it puts the channel back in
/// CS_EXECUTE and the dialplan continues at the action after `socket`
/// (the failover transfer in dialplan/freeswitch/bidbridge.xml). The
/// switch then sends its "Disconnected, goodbye" notice and closes.
pub const HAND_BACK: &[u8] = b"connect\n\nresume\n\n";

/// Hands an outbound connection straight back to the dialplan unserved
/// (the daemon is full or not ready); see [`HAND_BACK`].
pub async fn refuse_connection(stream: TcpStream) {
    if let Err(e) = super::handback::hand_back(stream, HAND_BACK).await {
        tracing::debug!(error = %e, "refused FreeSWITCH connection did not close cleanly");
    }
}

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
