//! Handing a connection straight back to the switch, unserved.
//!
//! When the daemon will not serve a call (at `calls.max_concurrent`, or
//! before the catalog is loaded), the worst thing it can do is leave the
//! connection waiting: the caller hears dead air, and the switch gives up
//! on its own schedule (FreeSWITCH's outbound socket waits 25 s for a first
//! command and then, without `resume`, leaves the channel parked). So the
//! connection is accepted and released at once, in the one way each switch
//! turns into "continue the dialplan": the adapter says which bytes that
//! takes ([`crate::pbx::freeswitch::HAND_BACK`],
//! [`crate::pbx::asterisk::HAND_BACK`]); this module writes them,
//! half-closes, and reads whatever the switch still sends until it closes
//! too, so the switch sees an orderly FIN rather than a reset. Nothing is
//! parsed: a refused call costs a few system calls, not a session.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the switch has to finish its side after our half-close. Both
/// switches close within milliseconds (FreeSWITCH after its disconnect
/// notice, Asterisk after `HANGUP`); the bound only keeps a peer that never
/// closes from holding a refusal slot.
pub const GRACE: Duration = Duration::from_secs(5);

/// The most a switch may send before its close; a refused connection is
/// dropped (reset) beyond it. FreeSWITCH's channel data is 6-12 KB.
const MAX_DRAIN: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HandBackError {
    #[error("writing to the switch failed: {0}")]
    Write(std::io::Error),
    #[error("the switch did not close within {0:?}")]
    Timeout(Duration),
    #[error("the switch sent more than {MAX_DRAIN} bytes before closing")]
    TooMuch,
    #[error("reading from the switch failed: {0}")]
    Read(std::io::Error),
}

/// Writes `farewell`, half-closes, and waits (up to [`GRACE`]) for the
/// switch to close its side. Returns the bytes the switch sent meanwhile
/// (how many; their content is not looked at).
pub async fn hand_back(mut stream: TcpStream, farewell: &[u8]) -> Result<usize, HandBackError> {
    let _ = stream.set_nodelay(true);
    if !farewell.is_empty() {
        stream
            .write_all(farewell)
            .await
            .map_err(HandBackError::Write)?;
    }
    stream.shutdown().await.map_err(HandBackError::Write)?;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(total),
                Ok(n) => {
                    total += n;
                    if total > MAX_DRAIN {
                        return Err(HandBackError::TooMuch);
                    }
                }
                Err(e) => return Err(HandBackError::Read(e)),
            }
        }
    };
    tokio::time::timeout(GRACE, drain)
        .await
        .map_err(|_| HandBackError::Timeout(GRACE))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.expect("connect"), server.expect("accept").0)
    }

    #[tokio::test]
    async fn writes_the_farewell_half_closes_and_reads_until_the_peer_closes() {
        let (mut switch, daemon) = pair().await;
        let handing = tokio::spawn(hand_back(daemon, b"bye\n\n"));
        let mut got = Vec::new();
        // The daemon's side ends after the farewell (half-close)...
        switch.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"bye\n\n");
        // ...and it still reads what the switch says before closing.
        switch.write_all(&[b'x'; 10_000]).await.expect("write");
        drop(switch);
        let drained = handing.await.expect("join").expect("hand back");
        assert_eq!(drained, 10_000);
    }

    #[tokio::test]
    async fn a_peer_that_never_closes_is_given_up_on() {
        tokio::time::pause();
        let (_switch, daemon) = pair().await;
        let result = hand_back(daemon, b"").await;
        assert!(
            matches!(result, Err(HandBackError::Timeout(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_peer_that_floods_is_cut_off() {
        let (mut switch, daemon) = pair().await;
        let handing = tokio::spawn(hand_back(daemon, b""));
        let flood = vec![b'y'; 64 * 1024];
        for _ in 0..8 {
            if switch.write_all(&flood).await.is_err() {
                break;
            }
        }
        let result = handing.await.expect("join");
        assert!(matches!(result, Err(HandBackError::TooMuch)), "{result:?}");
    }
}
