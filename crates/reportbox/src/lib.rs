//! The mailbox for reports: a message sent to `[dmarc] report_mailbox`
//! goes in, a summary of the DMARC aggregate report (RFC 7489 §7.2,
//! Appendix C) or TLS-RPT report (RFC 8460 §4) it carries comes out, or
//! the reason it is not one. Plain logic with no sockets; the one room
//! that writes files is `store.rs`, which keeps what the logic returns
//! under `DATA/reports/` and is the router's `ReportIntake`.
//!
//! Reports come from strangers, so everything here is bounded: the
//! attachment is unpacked (gzip, zip, or as it is) by us rather than by
//! mail-auth, because a zip bomb must be stopped by its compression ratio
//! long before the size cap (mail-auth checks only the size); at most
//! `MAX_CANDIDATES` parts and `MAX_ZIP_ENTRIES` archive entries are looked
//! at; the summary keeps at most `MAX_ROWS` rows and clips every string.
//! The XML and JSON themselves are read by mail-auth's parsers.
//!
//! Delivery status notifications (RFC 3464) that come back for our own
//! messages are read here too (`dsn.rs`), by the same means as ARF; they
//! are not kept (they go to their mailbox), only read for containment.

mod arf;
mod dsn;
mod store;
mod summary;
mod unpack;

pub use arf::ArfSummary;
pub use dsn::{DsnRecipient, DsnSummary, is_dsn, read_dsn};
pub use store::{ComplaintSink, ReportStore, list as list_stored, reports_dir};

pub use summary::{
    DmarcRow, DmarcSummary, PublishedPolicy, Summary, TlsFailure, TlsPolicy, TlsSummary,
};

/// The limits from `[dmarc] report_max_bytes` and `report_max_ratio`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most a report may be, unpacked.
    pub max_bytes: usize,
    /// The most a compressed attachment may grow when unpacked.
    pub max_ratio: u32,
}

/// Why a message to the report mailbox is not a report we can read. The
/// message is kept aside with this reason; nothing is sent back (a
/// reporter never reads bounces, RFC 7489 §7.2.1.1 has it use a
/// no-reply address).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("not a mail message")]
    NotMail,
    #[error("no report attached (expected XML, gzip or zip for DMARC, JSON or gzip for TLS-RPT)")]
    NoReport,
    #[error("report larger than the {limit}-byte limit when unpacked")]
    TooLarge { limit: usize },
    #[error(
        "report grows more than {limit}-fold when unpacked (a decompression bomb?): stopped at {unpacked} bytes from {packed}"
    )]
    RatioExceeded {
        limit: u32,
        packed: usize,
        unpacked: usize,
    },
    #[error("truncated {format} attachment: {why}")]
    Truncated { format: &'static str, why: String },
    #[error("cannot unpack the {format} attachment: {why}")]
    Unpack { format: &'static str, why: String },
    #[error("the zip archive holds no report file")]
    EmptyArchive,
    #[error("the attachment is neither XML (DMARC) nor JSON (TLS-RPT)")]
    UnknownFormat,
    #[error("not a DMARC aggregate report: {0}")]
    Dmarc(String),
    #[error("not a TLS-RPT report: {0}")]
    Tls(String),
    #[error("not a usable ARF feedback report: {0}")]
    Arf(String),
}

impl Malformed {
    /// A short name for metrics and the API.
    pub fn code(&self) -> &'static str {
        match self {
            Malformed::NotMail => "not_mail",
            Malformed::NoReport => "no_report",
            Malformed::TooLarge { .. } => "too_large",
            Malformed::RatioExceeded { .. } => "ratio",
            Malformed::Truncated { .. } => "truncated",
            Malformed::Unpack { .. } => "unpack",
            Malformed::EmptyArchive => "empty_archive",
            Malformed::UnknownFormat => "unknown_format",
            Malformed::Dmarc(_) => "bad_dmarc",
            Malformed::Tls(_) => "bad_tlsrpt",
            Malformed::Arf(_) => "bad_arf",
        }
    }

    /// The kind of report the message seemed to carry, for the metric's
    /// `kind` label: known once the payload is unpacked.
    pub fn kind(&self) -> &'static str {
        match self {
            Malformed::Dmarc(_) => "dmarc",
            Malformed::Tls(_) => "tls",
            Malformed::Arf(_) => "arf",
            _ => "unknown",
        }
    }
}

/// Read the report carried by `message` (RFC 5322, as it came in).
/// A feedback report (RFC 5965, `multipart/report;
/// report-type=feedback-report`) is read as ARF; anything else as a
/// DMARC or TLS-RPT report.
pub fn read_message(message: &[u8], limits: Limits) -> Result<Summary, Malformed> {
    if arf::is_feedback_report(message) {
        if message.len() > limits.max_bytes {
            return Err(Malformed::TooLarge {
                limit: limits.max_bytes,
            });
        }
        return arf::read(message).map(Summary::Arf);
    }
    unpack::first_report(message, limits)
}

/// Read an unpacked report: XML is a DMARC aggregate report (RFC 7489
/// Appendix C), JSON a TLS-RPT report (RFC 8460 §4.4). The content
/// decides, not the media type: reporters label attachments loosely
/// (`application/octet-stream`, `.xml.gz` as `application/zip`).
pub fn parse_payload(payload: &[u8]) -> Result<Summary, Malformed> {
    let text = payload.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(payload);
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'<') => mail_auth::report::Report::parse_xml(text)
            .map(|r| Summary::Dmarc(summary::dmarc(&r)))
            .map_err(|e| Malformed::Dmarc(summary::clip(&e))),
        Some(b'{') => mail_auth::report::tlsrpt::TlsReport::parse_json(text)
            .map(|r| Summary::Tls(summary::tls(&r)))
            .map_err(|e| Malformed::Tls(summary::clip(&tls_error(e)))),
        _ => Err(Malformed::UnknownFormat),
    }
}

fn tls_error(e: mail_auth::report::Error) -> String {
    match e {
        mail_auth::report::Error::ReportParseError(why) => why,
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests;
