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

/// What a refused FastAGI connection is told (see [`super::handback`]):
/// nothing. The half-close alone ends the AGI: Asterisk still sends
/// `HANGUP` and closes, and `AGI()` returns with `AGISTATUS=SUCCESS`
/// (recording 06); with `BIDBRIDGE_DONE` unset the shipped dialplan dials
/// the backup line.
pub const HAND_BACK: &[u8] = b"";

/// Hands a FastAGI connection straight back to the dialplan unserved (the
/// daemon is full or not ready); see [`HAND_BACK`].
pub async fn refuse_connection(stream: TcpStream) {
    if let Err(e) = super::handback::hand_back(stream, HAND_BACK).await {
        tracing::debug!(error = %e, "refused FastAGI connection did not close cleanly");
    }
}

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

#[cfg(test)]
mod tests {
    //! The whole path a FastAGI connection takes in the daemon
    //! (`serve_connection` → call flow → AgiChannel), against the fake
    //! Asterisk, with an empty catalog (no database needed).

    use super::*;
    use crate::config::{Config, UnknownNumberAction};
    use crate::simulate::asterisk::{FakeCall, place_call};
    use crate::simulate::scenario::Scenario;
    use tokio::net::TcpListener;

    async fn one_call(action: UnknownNumberAction) -> crate::simulate::asterisk::AgiCallReport {
        let journal = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.calls.unknown_number = action;
        config.records.journal_dir = journal.path().to_path_buf();
        config.database.url = "host=/nonexistent/bidbridge-test dbname=x".into();
        config.database.connect_timeout_ms = 100;
        let (records, writer) =
            crate::ledger::writer::start(&config.records, &config.database).expect("writer");
        let services = Arc::new(Services::new(
            config,
            crate::catalog::cache::CatalogCache::new(),
            records,
            Arc::new(crate::metrics::Metrics::new()),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let scenario = Scenario::parse("[run]\ntime_scale = 0.01\n").expect("scenario");
        let fake = tokio::spawn(async move {
            let call = FakeCall::from_scenario(&scenario, 0);
            place_call(addr, &scenario, call).await
        });
        let (stream, _) = listener.accept().await.expect("accept");
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            serve_connection(stream, services),
        )
        .await
        .expect("the call ends");
        let report = fake.await.expect("fake");
        let _ = tokio::task::spawn_blocking(move || writer.stop()).await;
        report
    }

    #[tokio::test]
    async fn unknown_number_is_handed_back_to_the_dialplan() {
        let report = one_call(UnknownNumberAction::Failover).await;
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert!(report.trace.completed);
        // No BIDBRIDGE_DONE: the dialplan's guard takes the caller to backup.
        assert_eq!(report.trace.ended, "handed back");
        assert_eq!(report.variables.get("BIDBRIDGE_DONE"), None);
    }

    #[tokio::test]
    async fn unknown_number_hang_up_is_settled_first() {
        let report = one_call(UnknownNumberAction::Hangup).await;
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert_eq!(report.trace.ended, "hangup UNALLOCATED_NUMBER");
        assert_eq!(
            report.variables.get("BIDBRIDGE_DONE").map(String::as_str),
            Some("1")
        );
        let done = report
            .commands
            .iter()
            .position(|c| c == "SET VARIABLE BIDBRIDGE_DONE 1");
        let hangup = report.commands.iter().position(|c| c == "EXEC Hangup 1");
        assert!(
            done.is_some() && hangup.is_some() && done < hangup,
            "{:?}",
            report.commands
        );
    }
}
