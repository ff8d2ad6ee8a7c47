//! Relaying a redirected connection untouched to where the app was connecting: TLS and
//! protocols other than HTTP under `unmatched: passthrough`.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Connects to `destination` (tokex's own uid is never redirected, so this leaves) and
/// copies both ways until either side closes. `app` replays the bytes already read.
pub async fn relay<T>(
    mut app: T,
    destination: SocketAddr,
    connect_within: Duration,
) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut upstream = tokio::time::timeout(connect_within, TcpStream::connect(destination))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = upstream.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut app, &mut upstream)
        .await
        .map(drop)
}
