//! Listeners behind a load balancer (`proxy_protocol = true`): the PROXY
//! header comes first, before TLS on 465, and names the real client,
//! whose address then drives admission, SPF, iprev, Received, the logs
//! and the submission trace. The header is required, and taken only from
//! `proxy_from`: any other peer, or a malformed, oversized or late
//! header, closes the connection with a log line and a metric, never
//! treating the balancer (or a client pretending) as the client.

use crate::Context;
use crate::listen::count_connection;
use portcullis_config::Listener;
use portcullis_proxy::{Parsed, ProxyError, Source, parse};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tracing::info;

/// A balancer sends its header at once.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The client the header names (the peer itself for a balancer's own
/// LOCAL connection), or None when the connection must close.
pub(crate) async fn client(
    ctx: &Context,
    stream: &mut TcpStream,
    peer: SocketAddr,
    l: &Listener,
) -> Option<SocketAddr> {
    let refuse = |why: &str| {
        count_connection(ctx, l.role, "refused_proxy");
        info!(event = "refused", listener = l.role.name(), peer = %peer, reason = %why);
    };
    if !l.proxy_from.iter().any(|c| c.contains(peer.ip())) {
        refuse("a PROXY header is only taken from proxy_from");
        return None;
    }
    match tokio::time::timeout(HEADER_TIMEOUT, read_header(stream)).await {
        Ok(Ok(Source::Client(client))) => Some(client),
        Ok(Ok(Source::Local)) => Some(peer),
        Ok(Err(e)) => {
            refuse(&e.to_string());
            None
        }
        Err(_) => {
            refuse("no PROXY header in time");
            None
        }
    }
}

/// Read exactly the header's bytes, nothing of what follows (on 465 the
/// TLS ClientHello comes right after it).
async fn read_header(stream: &mut TcpStream) -> Result<Source, ProxyError> {
    // The shortest header, v1's "PROXY UNKNOWN\r\n", is 15 bytes.
    let mut buf = vec![0u8; 15];
    let io = |_| ProxyError::Malformed("the connection closed");
    stream.read_exact(&mut buf).await.map_err(io)?;
    loop {
        match parse(&buf)? {
            Parsed::Header(source, used) if used == buf.len() => return Ok(source),
            Parsed::Header(..) => return Err(ProxyError::Malformed("header length")),
            Parsed::NeedMore(n) => {
                let have = buf.len();
                buf.resize(n.max(have + 1), 0);
                stream.read_exact(&mut buf[have..]).await.map_err(io)?;
            }
        }
    }
}
