//! On-disk record format of a segment. Each record is
//! `"PCQ1" | header_len u32 | data_len u32 | crc32 u32 | header | data`,
//! little-endian, the CRC over header and data. A record that is cut short
//! or fails its CRC marks the end of the valid part of a segment: it is the
//! tail of a write a crash interrupted, which was never acknowledged.

use serde::{Deserialize, Serialize};

pub(crate) const MAGIC: &[u8; 4] = b"PCQ1";
const FIXED: usize = 16;

/// The envelope of a queued message: what SMTP said about it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    pub id: String,
    /// Empty for the null reverse-path.
    pub sender: String,
    pub recipients: Vec<QueuedRecipient>,
    /// Seconds since the epoch when the message was accepted.
    pub received_at: u64,
    pub client_ip: String,
    pub helo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    #[serde(default)]
    pub smtputf8: bool,
    #[serde(default)]
    pub eight_bit: bool,
    /// DSN RET= (`FULL` or `HDRS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// REQUIRETLS (RFC 8689): relayed only over TLS validated by MTA-STS
    /// or DANE to a next hop that offers REQUIRETLS, else bounced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_tls: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueuedRecipient {
    pub address: String,
    /// DSN NOTIFY= as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
    /// Local delivery into this folder (e.g. `Junk` for DMARC
    /// quarantine) instead of the inbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
}

pub(crate) fn encode(env: &Envelope, data: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(env).unwrap_or_default();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.update(data);
    let mut out = Vec::with_capacity(FIXED + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out
}

/// Decode the record at the start of `buf`: the envelope, the data and
/// the record's length, or `None` if no whole valid record is there.
pub(crate) fn decode(buf: &[u8]) -> Option<(Envelope, &[u8], usize)> {
    if buf.len() < FIXED || &buf[..4] != MAGIC {
        return None;
    }
    let word = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]) as usize;
    let (hlen, dlen, crc) = (word(4), word(8), word(12) as u32);
    let total = FIXED.checked_add(hlen)?.checked_add(dlen)?;
    if buf.len() < total {
        return None;
    }
    let header = &buf[FIXED..FIXED + hlen];
    let data = &buf[FIXED + hlen..total];
    let mut h = crc32fast::Hasher::new();
    h.update(header);
    h.update(data);
    if h.finalize() != crc {
        return None;
    }
    let env = serde_json::from_slice(header).ok()?;
    Some((env, data, total))
}
