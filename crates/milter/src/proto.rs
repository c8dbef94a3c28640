//! The milter protocol, version 6, as libmilter (`mfdef.h`) and Postfix
//! (`src/milter/milter8.c`) speak it, without I/O: [`Command`]s the MTA
//! sends are encoded to bytes, and the milter's bytes are cut into
//! [`Response`]s by a bounded [`Decoder`]. A packet is a 32-bit length in
//! network order (counting the command byte), one command byte, and the
//! data. Nothing here panics on what a milter sends: every malformed,
//! truncated or oversized packet is an [`Error`].

use thiserror::Error;

/// The protocol version we speak (libmilter's SMFI_PROT_VERSION).
pub const VERSION: u32 = 6;

/// The largest packet we accept from a milter. libmilter's largest is a
/// replaced body chunk (65,535 bytes, or 1 MiB with SMFIP_MDS_1M, which
/// we do not offer) or a header; anything longer is a broken peer.
pub const MAX_PACKET: usize = 1024 * 1024;

/// The largest body chunk we send (libmilter's MILTER_CHUNK_SIZE).
pub const BODY_CHUNK: usize = 65535;

/// Actions a milter may ask for (SMFIF_*).
pub mod action;

/// Protocol steps a milter may skip or not answer (SMFIP_*).
pub mod step;

/// The protocol stages macros are sent for (SMFIM_*), as a milter's
/// SETSYMLIST names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Connect = 0,
    Helo = 1,
    Mail = 2,
    Rcpt = 3,
    Data = 4,
    Eom = 5,
    Eoh = 6,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Connect,
        Stage::Helo,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::Eom,
        Stage::Eoh,
    ];

    fn from_index(i: u32) -> Option<Stage> {
        Stage::ALL.get(usize::try_from(i).ok()?).copied()
    }

    /// The command byte the stage's macros are sent for.
    pub fn command_byte(self) -> u8 {
        match self {
            Stage::Connect => b'C',
            Stage::Helo => b'H',
            Stage::Mail => b'M',
            Stage::Rcpt => b'R',
            Stage::Data => b'T',
            Stage::Eom => b'E',
            Stage::Eoh => b'N',
        }
    }
}

/// The client's address as SMFIC_CONNECT carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Family {
    Inet(std::net::SocketAddr),
    Unknown,
}

/// What the MTA sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    OptNeg {
        version: u32,
        actions: u32,
        protocol: u32,
    },
    Macros {
        stage: Stage,
        pairs: &'a [(String, String)],
    },
    Connect {
        hostname: &'a str,
        family: Family,
    },
    Helo(&'a str),
    /// The sender (with its angle brackets) and its ESMTP parameters.
    Mail(&'a [String]),
    Rcpt(&'a [String]),
    Data,
    Header {
        name: &'a str,
        /// As the message has it (not always UTF-8).
        value: &'a [u8],
    },
    Eoh,
    Body(&'a [u8]),
    Eom,
    Abort,
    Quit,
}

impl Command<'_> {
    /// The packet, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(64);
        p.extend_from_slice(&[0, 0, 0, 0]);
        match self {
            Command::OptNeg {
                version,
                actions,
                protocol,
            } => {
                p.push(b'O');
                p.extend_from_slice(&version.to_be_bytes());
                p.extend_from_slice(&actions.to_be_bytes());
                p.extend_from_slice(&protocol.to_be_bytes());
            }
            Command::Macros { stage, pairs } => {
                p.push(b'D');
                p.push(stage.command_byte());
                for (k, v) in pairs.iter() {
                    cstr(&mut p, k);
                    cstr(&mut p, v);
                }
            }
            Command::Connect { hostname, family } => {
                p.push(b'C');
                cstr(&mut p, hostname);
                match family {
                    Family::Inet(a) => {
                        p.push(if a.is_ipv4() { b'4' } else { b'6' });
                        p.extend_from_slice(&a.port().to_be_bytes());
                        cstr(&mut p, &a.ip().to_string());
                    }
                    Family::Unknown => p.push(b'U'),
                }
            }
            Command::Helo(name) => {
                p.push(b'H');
                cstr(&mut p, name);
            }
            Command::Mail(args) | Command::Rcpt(args) => {
                p.push(if matches!(self, Command::Mail(_)) {
                    b'M'
                } else {
                    b'R'
                });
                for a in args.iter() {
                    cstr(&mut p, a);
                }
            }
            Command::Data => p.push(b'T'),
            Command::Header { name, value } => {
                p.push(b'L');
                cstr(&mut p, name);
                cbytes(&mut p, value);
            }
            Command::Eoh => p.push(b'N'),
            Command::Body(chunk) => {
                p.push(b'B');
                p.extend_from_slice(chunk);
            }
            Command::Eom => p.push(b'E'),
            Command::Abort => p.push(b'A'),
            Command::Quit => p.push(b'Q'),
        }
        let len = u32::try_from(p.len() - 4).unwrap_or(u32::MAX);
        p[..4].copy_from_slice(&len.to_be_bytes());
        p
    }
}

/// A string as the protocol carries it: NUL-terminated, so a NUL inside
/// (which SMTP never lets through) is cut there.
fn cstr(p: &mut Vec<u8>, s: &str) {
    cbytes(p, s.as_bytes());
}

fn cbytes(p: &mut Vec<u8>, bytes: &[u8]) {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    p.extend_from_slice(&bytes[..end]);
    p.push(0);
}

/// What the milter answers with in option negotiation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u32,
    pub actions: u32,
    pub protocol: u32,
    /// The macros the milter wants per stage (SETSYMLIST); a stage not
    /// listed gets our defaults.
    pub macros: Vec<(Stage, Vec<String>)>,
}

impl Negotiated {
    pub fn skips(&self, flag: u32) -> bool {
        self.protocol & flag != 0
    }

    pub fn may(&self, action: u32) -> bool {
        self.actions & action != 0
    }

    /// The macro names asked for at a stage, if the milter said.
    pub fn macros_for(&self, stage: Stage) -> Option<&[String]> {
        self.macros
            .iter()
            .find(|(s, _)| *s == stage)
            .map(|(_, v)| v.as_slice())
    }
}

impl std::fmt::Display for Negotiated {
    /// For `check-config`: the version, the actions it may take, the
    /// steps it skips and those it does not answer.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const ACTIONS: [(u32, &str); 9] = [
            (action::ADDHDRS, "add-headers"),
            (action::CHGBODY, "replace-body"),
            (action::ADDRCPT, "add-recipients"),
            (action::DELRCPT, "delete-recipients"),
            (action::CHGHDRS, "change-headers"),
            (action::QUARANTINE, "quarantine"),
            (action::CHGFROM, "change-sender"),
            (action::ADDRCPT_PAR, "add-recipients-with-parameters"),
            (action::SETSYMLIST, "macro-lists"),
        ];
        const SKIPS: [(u32, &str); 8] = [
            (step::NOCONNECT, "connect"),
            (step::NOHELO, "helo"),
            (step::NOMAIL, "mail"),
            (step::NORCPT, "rcpt"),
            (step::NODATA, "data"),
            (step::NOHDRS, "headers"),
            (step::NOEOH, "eoh"),
            (step::NOBODY, "body"),
        ];
        const NO_REPLY: [(u32, &str); 8] = [
            (step::NR_CONN, "connect"),
            (step::NR_HELO, "helo"),
            (step::NR_MAIL, "mail"),
            (step::NR_RCPT, "rcpt"),
            (step::NR_DATA, "data"),
            (step::NR_HDR, "headers"),
            (step::NR_EOH, "eoh"),
            (step::NR_BODY, "body"),
        ];
        let names = |flags: u32, table: &[(u32, &'static str)]| {
            let v: Vec<&str> = table
                .iter()
                .filter(|(f, _)| flags & f != 0)
                .map(|(_, n)| *n)
                .collect();
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(",")
            }
        };
        write!(
            f,
            "version {}; actions: {}; skips: {}; no reply to: {}",
            self.version,
            names(self.actions, &ACTIONS),
            names(self.protocol, &SKIPS),
            names(self.protocol, &NO_REPLY)
        )?;
        for (stage, macros) in &self.macros {
            write!(f, "; macros at {stage:?}: {}", macros.join(" "))?;
        }
        Ok(())
    }
}

/// What a milter sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    OptNeg(Negotiated),
    Accept,
    Continue,
    Reject,
    Tempfail,
    Discard,
    /// An SMTP reply of the milter's own (`smfi_setreply`), unchecked.
    ReplyCode(String),
    Progress,
    Skip,
    /// The milter shut down (SMFIR_SHUTDOWN) or failed the connection.
    Shutdown,
    Quarantine(String),
    AddHeader {
        name: String,
        value: String,
    },
    /// Insert at a 0-based position among the headers.
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// Change the index-th (1-based) header of that name; an empty value
    /// deletes it.
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    AddRcpt {
        rcpt: String,
        args: Option<String>,
    },
    DelRcpt(String),
    ChangeFrom {
        from: String,
        args: Option<String>,
    },
    ReplaceBody(Vec<u8>),
}

impl Response {
    /// The word the metrics and the log use for it.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::OptNeg(_) => "optneg",
            Response::Accept => "accept",
            Response::Continue => "continue",
            Response::Reject => "reject",
            Response::Tempfail => "tempfail",
            Response::Discard => "discard",
            Response::ReplyCode(_) => "replycode",
            Response::Progress => "progress",
            Response::Skip => "skip",
            Response::Shutdown => "shutdown",
            Response::Quarantine(_) => "quarantine",
            Response::AddHeader { .. } => "addheader",
            Response::InsertHeader { .. } => "insheader",
            Response::ChangeHeader { .. } => "chgheader",
            Response::AddRcpt { .. } => "addrcpt",
            Response::DelRcpt(_) => "delrcpt",
            Response::ChangeFrom { .. } => "chgfrom",
            Response::ReplaceBody(_) => "replbody",
        }
    }

    /// Whether it ends the exchange for the command it answers (the
    /// others are modifications or progress, and more follow).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Response::OptNeg(_)
                | Response::Accept
                | Response::Continue
                | Response::Reject
                | Response::Tempfail
                | Response::Discard
                | Response::ReplyCode(_)
                | Response::Skip
                | Response::Shutdown
        )
    }
}

/// A packet the milter sent that we cannot take.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Error {
    #[error("packet of {0} bytes exceeds the limit of {MAX_PACKET}")]
    TooLong(usize),
    #[error("empty packet")]
    Empty,
    #[error("unknown response code {0:#04x}")]
    UnknownCode(u8),
    #[error("malformed {0} packet")]
    Malformed(&'static str),
}

/// Cuts a byte stream into packets, holding at most one packet's bytes.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// How many more bytes the next packet needs (at least one), for the
    /// caller's read size; never more than the limit allows.
    pub fn wanted(&self) -> usize {
        match self.buf.get(..4) {
            Some(len) => {
                let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                (len.min(MAX_PACKET) + 4)
                    .saturating_sub(self.buf.len())
                    .max(1)
            }
            None => 4 - self.buf.len(),
        }
    }

    /// The next whole response, if the bytes fed so far hold one.
    pub fn next_response(&mut self) -> Result<Option<Response>, Error> {
        let Some(len) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > MAX_PACKET {
            return Err(Error::TooLong(len));
        }
        if len == 0 {
            return Err(Error::Empty);
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let packet: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
        parse(packet[0], &packet[1..]).map(Some)
    }
}

/// One response from its code and data.
pub fn parse(code: u8, data: &[u8]) -> Result<Response, Error> {
    let none = |r: Response, what: &'static str| {
        if data.is_empty() {
            Ok(r)
        } else {
            Err(Error::Malformed(what))
        }
    };
    Ok(match code {
        b'O' => Response::OptNeg(optneg(data)?),
        b'a' => none(Response::Accept, "accept")?,
        b'c' => none(Response::Continue, "continue")?,
        b'r' => none(Response::Reject, "reject")?,
        b't' => none(Response::Tempfail, "tempfail")?,
        b'd' => none(Response::Discard, "discard")?,
        b'p' => none(Response::Progress, "progress")?,
        b's' => none(Response::Skip, "skip")?,
        b'4' | b'f' => Response::Shutdown,
        b'y' => Response::ReplyCode(one_string(data, "replycode")?),
        b'q' => Response::Quarantine(one_string(data, "quarantine")?),
        b'h' => {
            let (name, value) = two_strings(data, "addheader")?;
            Response::AddHeader { name, value }
        }
        b'i' | b'm' => {
            let what = if code == b'i' {
                "insheader"
            } else {
                "chgheader"
            };
            let (index, rest) = u32_at(data).ok_or(Error::Malformed(what))?;
            let (name, value) = two_strings(rest, what)?;
            if code == b'i' {
                Response::InsertHeader { index, name, value }
            } else {
                Response::ChangeHeader { index, name, value }
            }
        }
        b'+' => Response::AddRcpt {
            rcpt: one_string(data, "addrcpt")?,
            args: None,
        },
        b'2' => {
            let mut parts = strings(data, "addrcpt_par")?;
            if parts.is_empty() || parts.len() > 2 {
                return Err(Error::Malformed("addrcpt_par"));
            }
            let args = (parts.len() == 2).then(|| parts.remove(1));
            Response::AddRcpt {
                rcpt: parts.remove(0),
                args,
            }
        }
        b'-' => Response::DelRcpt(one_string(data, "delrcpt")?),
        b'e' => {
            let mut parts = strings(data, "chgfrom")?;
            if parts.is_empty() || parts.len() > 2 {
                return Err(Error::Malformed("chgfrom"));
            }
            let args = (parts.len() == 2).then(|| parts.remove(1));
            Response::ChangeFrom {
                from: parts.remove(0),
                args,
            }
        }
        b'b' => Response::ReplaceBody(data.to_vec()),
        other => return Err(Error::UnknownCode(other)),
    })
}

fn u32_at(data: &[u8]) -> Option<(u32, &[u8])> {
    let b = data.get(..4)?;
    Some((u32::from_be_bytes([b[0], b[1], b[2], b[3]]), &data[4..]))
}

/// NUL-terminated strings filling the whole of `data`; each must be
/// UTF-8 (lossy would let a milter smuggle replacement characters into
/// headers silently, so it is an error).
fn strings(data: &[u8], what: &'static str) -> Result<Vec<String>, Error> {
    if data.last() != Some(&0) {
        return Err(Error::Malformed(what));
    }
    data[..data.len() - 1]
        .split(|b| *b == 0)
        .map(|s| String::from_utf8(s.to_vec()).map_err(|_| Error::Malformed(what)))
        .collect()
}

fn one_string(data: &[u8], what: &'static str) -> Result<String, Error> {
    let mut v = strings(data, what)?;
    match v.len() {
        1 => Ok(v.remove(0)),
        _ => Err(Error::Malformed(what)),
    }
}

fn two_strings(data: &[u8], what: &'static str) -> Result<(String, String), Error> {
    let mut v = strings(data, what)?;
    match v.len() {
        2 => {
            let value = v.remove(1);
            Ok((v.remove(0), value))
        }
        _ => Err(Error::Malformed(what)),
    }
}

/// The milter's half of option negotiation: version, actions, steps, then
/// (version 6) macro lists: a stage index and a space-separated list.
fn optneg(data: &[u8]) -> Result<Negotiated, Error> {
    let bad = Error::Malformed("optneg");
    let (version, rest) = u32_at(data).ok_or(bad.clone())?;
    let (actions, rest) = u32_at(rest).ok_or(bad.clone())?;
    let (protocol, mut rest) = u32_at(rest).ok_or(bad.clone())?;
    let mut macros = Vec::new();
    while !rest.is_empty() {
        let (index, after) = u32_at(rest).ok_or(bad.clone())?;
        let end = after.iter().position(|b| *b == 0).ok_or(bad.clone())?;
        let list = std::str::from_utf8(&after[..end]).map_err(|_| bad.clone())?;
        if let Some(stage) = Stage::from_index(index) {
            let names = list.split_whitespace().map(str::to_owned).collect();
            macros.push((stage, names));
        }
        rest = &after[end + 1..];
    }
    Ok(Negotiated {
        version,
        actions,
        protocol,
        macros,
    })
}

#[cfg(test)]
mod tests;
