//! The Received trace header (RFC 5321 4.4) that is prepended to every
//! accepted message.

use crate::session::Transaction;
use std::time::SystemTime;

/// Build the Received header for `txn`, accepted by `hostname` under queue
/// id `id` at `now`. The `for` clause names the recipient only when there is
/// exactly one, so a message to many does not disclose the others (4.4).
pub fn received_header<X>(
    txn: &Transaction<X>,
    hostname: &str,
    id: &str,
    now: SystemTime,
) -> String {
    let peer = &txn.peer;
    let ip = peer.addr.ip();
    let literal = match ip {
        std::net::IpAddr::V4(v4) => format!("[{v4}]"),
        std::net::IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    };
    let reverse = match &peer.ptr {
        Some(name) => format!("{name} {literal}"),
        None => literal,
    };
    let mut h = format!(
        "Received: from {} ({reverse})\r\n\tby {hostname} (portcullis) with {}",
        txn.helo,
        txn.protocol()
    );
    h.push_str(&format!(" id {id}"));
    if let Some(tls) = &txn.tls {
        h.push_str(&format!(
            "\r\n\t(using {} with cipher {})",
            tls.version, tls.cipher
        ));
    }
    if let Some(user) = &txn.auth {
        h.push_str(&format!("\r\n\t(authenticated as {user})"));
    }
    if let [only] = txn.recipients.as_slice() {
        h.push_str(&format!("\r\n\tfor <{}>", only.mailbox));
    }
    h.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(now)));
    h
}

/// `Tue, 24 Nov 2026 11:36:51 +0000` (RFC 5322 3.3), always in UTC.
pub fn rfc5322_date(now: SystemTime) -> String {
    // httpdate gives "Tue, 24 Nov 2026 11:36:51 GMT"; RFC 5322 prefers a
    // numeric zone.
    let http = httpdate::fmt_http_date(now);
    match http.strip_suffix("GMT") {
        Some(stem) => format!("{stem}+0000"),
        None => http,
    }
}
