//! The connect stage. On port 25 the class of service decides first, in
//! the accept path before any session exists ([`Inbound::admit`]: the
//! blocklist, the range's and the class's concurrency and rate), so a
//! refused client costs no DNS lookup. An admitted client's address is
//! then looked up ([`Connection::connect`]): its forward-confirmed reverse
//! name (for Received and iprev) and the address lists.

use crate::{Connection, Gate, Inbound, Refusal, StageResult, checks, dnslists, tarpit_delay};
use portcullis_config::ListenerRole;
use std::net::IpAddr;
use std::time::Duration;
use tracing::info;

impl Inbound {
    /// The class of service of a port-25 client (None on submission
    /// ports, where AUTH identifies the sender), or the refusal to send
    /// before closing.
    pub async fn admit(&self, role: ListenerRole, ip: IpAddr) -> Result<Option<Gate>, Refusal> {
        if role != ListenerRole::Mx {
            return Ok(None);
        }
        self.admission.connect(ip).await.map(Some)
    }
}

impl Connection {
    /// Port 25, before the greeting: reverse DNS and the address lists.
    /// Goes on with the client's confirmed name, for Received; the lists'
    /// header lines are kept for every message of the connection.
    pub async fn connect(&mut self) -> StageResult<Option<String>> {
        if self.role != ListenerRole::Mx {
            return Ok(None);
        }
        let ip = self.peer.ip();
        let t0 = std::time::Instant::now();
        let (iprev, ptr) = self.inbound.checks.iprev(ip).await;
        self.inbound.metrics.dns_check("iprev", t0.elapsed());
        info!(session = %self.id, event = "iprev", result = iprev.as_str(), ptr = ptr.as_deref().unwrap_or(""));
        self.iprev = Some(iprev);
        self.ptr = ptr.clone();
        let lists = &self.config.dns_lists;
        self.client_labels = dnslists::client(self.inbound.checks.as_ref(), lists, ip).await?;
        match checks::reverse_dns_refusal(&self.config.reverse_dns, iprev, ip) {
            Some(refusal) => Err(refusal),
            None => Ok(ptr),
        }
    }

    /// The slides' "if a client causes user unknown, taking a longer time
    /// to accept the next connection from the client": the greeting waits
    /// as a reply in the tarpit would.
    pub fn greeting_delay(&self) -> Duration {
        let unknown = self.gate.as_ref().map_or(0, |g| g.unknown_users);
        tarpit_delay(&self.config.limits, unknown)
    }
}
