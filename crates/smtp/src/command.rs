//! Command lines (RFC 5321 4.1.1) and their ESMTP parameters: SIZE and BODY
//! (RFC 1870, 6152), SMTPUTF8 (RFC 6531), the DSN parameters RET, ENVID,
//! NOTIFY and ORCPT (RFC 3461), AUTH= (RFC 4954), and BDAT (RFC 3030).
//!
//! A parse failure is the reply to send, so the caller cannot forget to give
//! one and every refusal names what was wrong.

use crate::address::{self, Path};
use crate::reply::{Reply, Status, canned};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    Mail(Path, MailParams),
    Rcpt(Path, RcptParams),
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    /// Something that is not SMTP at all (an HTTP request sent to the mail
    /// port, say): the session closes, as Postfix does.
    Foreign,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Body {
    #[default]
    SevenBit,
    EightBitMime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// MAIL FROM parameters, kept for the queue and the DSN they may produce.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Body,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// ENVID as sent (xtext, RFC 3461 4.4).
    pub envid: Option<String>,
    /// AUTH= as sent (xtext), RFC 4954 5.
    pub auth: Option<String>,
    /// REQUIRETLS (RFC 8689): relay only over validated TLS.
    pub requiretls: bool,
}

/// NOTIFY= (RFC 3461 4.1): `NEVER` or any of the three conditions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    /// ORCPT as `(addr-type, xtext)`, RFC 3461 4.2.
    pub orcpt: Option<(String, String)>,
}

/// Parse one command line, without its CRLF.
pub fn parse(line: &str) -> Result<Command, Reply> {
    let (verb, arg) = match line.split_once(' ') {
        Some((v, a)) => (v, a),
        None => (line, ""),
    };
    let no_arg = |c: Command| {
        if arg.trim().is_empty() {
            Ok(c)
        } else {
            Err(canned::syntax("Syntax error: no parameters allowed"))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "HELO" => domain_arg(arg).map(Command::Helo),
        "EHLO" => domain_arg(arg).map(Command::Ehlo),
        "MAIL" => mail(arg),
        "RCPT" => rcpt(arg),
        "DATA" => no_arg(Command::Data),
        "BDAT" => bdat(arg),
        "RSET" => no_arg(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_arg(Command::Quit),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_arg(Command::StartTls),
        "AUTH" => auth(arg),
        "GET" | "POST" | "HEAD" | "PUT" | "CONNECT" | "USER" => Ok(Command::Foreign),
        _ => Err(canned::unknown_command()),
    }
}

/// HELO/EHLO argument: a domain or an address literal. Kept as given for
/// the Received header; only its shape is checked here.
fn domain_arg(arg: &str) -> Result<String, Reply> {
    let name = arg.trim();
    let shaped = !name.is_empty()
        && name.len() <= address::MAX_DOMAIN
        && name.bytes().all(|b| b.is_ascii_graphic() || b >= 0x80);
    if shaped {
        Ok(name.to_owned())
    } else {
        Err(canned::syntax("Syntax: EHLO hostname"))
    }
}

fn strip_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| &arg[keyword.len()..])
}

fn mail(arg: &str) -> Result<Command, Reply> {
    let rest =
        strip_keyword(arg, "FROM:").ok_or_else(|| canned::syntax("Syntax: MAIL FROM:<address>"))?;
    // SMTPUTF8 among the parameters decides how the address may be spelt,
    // so look at the parameters first.
    let utf8 = rest.split(' ').any(|p| p.eq_ignore_ascii_case("SMTPUTF8"));
    let (path, params) = address::parse_path(rest, utf8).map_err(sender_error)?;
    if path == Path::Postmaster {
        return Err(sender_error(address::AddressError::Syntax));
    }
    Ok(Command::Mail(path, mail_params(params)?))
}

fn sender_error(e: address::AddressError) -> Reply {
    let status = match e {
        address::AddressError::NeedsSmtpUtf8 => Status(5, 6, 7),
        _ => Status(5, 1, 7),
    };
    let code = if e == address::AddressError::NeedsSmtpUtf8 {
        553
    } else {
        501
    };
    Reply::new(
        code,
        status,
        format!("Bad sender address: {}", e.describe()),
    )
}

fn recipient_error(e: address::AddressError) -> Reply {
    let (code, status) = match e {
        address::AddressError::NeedsSmtpUtf8 => (553, Status(5, 6, 7)),
        _ => (501, Status(5, 1, 3)),
    };
    Reply::new(
        code,
        status,
        format!("Bad recipient address: {}", e.describe()),
    )
}

fn rcpt(arg: &str) -> Result<Command, Reply> {
    let rest =
        strip_keyword(arg, "TO:").ok_or_else(|| canned::syntax("Syntax: RCPT TO:<address>"))?;
    // UTF-8 recipients are only legal after MAIL ... SMTPUTF8; the session
    // checks that, the parser accepts the spelling.
    let (path, params) = address::parse_path(rest, true).map_err(recipient_error)?;
    if path == Path::Null {
        return Err(recipient_error(address::AddressError::Syntax));
    }
    Ok(Command::Rcpt(path, rcpt_params(params)?))
}

/// `keyword[=value]` pairs separated by spaces (RFC 5321 4.1.2).
fn params(s: &str) -> Result<Vec<(String, Option<&str>)>, Reply> {
    let mut out: Vec<(String, Option<&str>)> = Vec::new();
    for p in s.split(' ').filter(|p| !p.is_empty()) {
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        };
        let key_ok = !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let value_ok =
            v.is_none_or(|v| !v.is_empty() && v.bytes().all(|b| b > 32 && b != b'=' && b != 127));
        if !key_ok || !value_ok {
            return Err(canned::syntax(&format!("Syntax error in parameter {p}")));
        }
        let k = k.to_ascii_uppercase();
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(canned::syntax(&format!("Duplicate parameter {k}")));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn unsupported(k: &str) -> Reply {
    Reply::new(555, Status(5, 5, 4), format!("Unsupported parameter {k}"))
}

fn mail_params(s: &str) -> Result<MailParams, Reply> {
    let mut p = MailParams::default();
    for (k, v) in params(s)? {
        match (k.as_str(), v) {
            ("SIZE", Some(v)) => {
                p.size = Some(
                    v.parse()
                        .map_err(|_| canned::syntax("SIZE must be a number of octets"))?,
                )
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => p.body = Body::SevenBit,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => p.body = Body::EightBitMime,
            ("BODY", Some(_)) => {
                return Err(Reply::new(
                    555,
                    Status(5, 5, 4),
                    "BODY must be 7BIT or 8BITMIME",
                ));
            }
            ("SMTPUTF8", None) => p.smtputf8 = true,
            ("REQUIRETLS", None) => p.requiretls = true,
            ("RET", Some(v)) if v.eq_ignore_ascii_case("FULL") => p.ret = Some(Ret::Full),
            ("RET", Some(v)) if v.eq_ignore_ascii_case("HDRS") => p.ret = Some(Ret::Hdrs),
            ("RET", Some(_)) => return Err(canned::syntax("RET must be FULL or HDRS")),
            ("ENVID", Some(v)) => p.envid = Some(xtext(v, 100)?.to_owned()),
            ("AUTH", Some(v)) => p.auth = Some(xtext(v, 500)?.to_owned()),
            _ => return Err(unsupported(&k)),
        }
    }
    Ok(p)
}

fn rcpt_params(s: &str) -> Result<RcptParams, Reply> {
    let mut p = RcptParams::default();
    for (k, v) in params(s)? {
        match (k.as_str(), v) {
            ("NOTIFY", Some(v)) => p.notify = Some(notify(v)?),
            ("ORCPT", Some(v)) => {
                let (kind, addr) = v
                    .split_once(';')
                    .filter(|(t, a)| !t.is_empty() && !a.is_empty())
                    .ok_or_else(|| canned::syntax("ORCPT must be addr-type;xtext"))?;
                p.orcpt = Some((kind.to_owned(), xtext(addr, 500)?.to_owned()));
            }
            _ => return Err(unsupported(&k)),
        }
    }
    Ok(p)
}

/// RFC 3461 4.1: `NEVER`, or a comma list of SUCCESS, FAILURE, DELAY.
fn notify(v: &str) -> Result<Notify, Reply> {
    if v.eq_ignore_ascii_case("NEVER") {
        return Ok(Notify::default());
    }
    let mut n = Notify::default();
    for item in v.split(',') {
        match item.to_ascii_uppercase().as_str() {
            "SUCCESS" => n.success = true,
            "FAILURE" => n.failure = true,
            "DELAY" => n.delay = true,
            _ => {
                return Err(canned::syntax(
                    "NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY",
                ));
            }
        }
    }
    Ok(n)
}

/// xtext (RFC 3461 4): printable ASCII except `+` and `=`, or `+XX` hex.
fn xtext(v: &str, max: usize) -> Result<&str, Reply> {
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if b.len() > i + 2 && b[i + 1..i + 3].iter().all(|c| c.is_ascii_hexdigit()) => {
                i += 3
            }
            33..=126 if b[i] != b'+' && b[i] != b'=' => i += 1,
            _ => return Err(canned::syntax("Parameter value is not valid xtext")),
        }
    }
    if v.len() > max {
        return Err(canned::syntax("Parameter value too long"));
    }
    Ok(v)
}

fn bdat(arg: &str) -> Result<Command, Reply> {
    let mut words = arg.split(' ').filter(|w| !w.is_empty());
    let size = words
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| canned::syntax("Syntax: BDAT chunk-size [LAST]"))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(canned::syntax("Syntax: BDAT chunk-size [LAST]")),
    };
    if words.next().is_some() {
        return Err(canned::syntax("Syntax: BDAT chunk-size [LAST]"));
    }
    Ok(Command::Bdat { size, last })
}

fn auth(arg: &str) -> Result<Command, Reply> {
    let mut words = arg.split(' ').filter(|w| !w.is_empty());
    let mechanism = words
        .next()
        .ok_or_else(|| canned::syntax("Syntax: AUTH mechanism [initial-response]"))?
        .to_ascii_uppercase();
    let initial = words.next().map(str::to_owned);
    if words.next().is_some() {
        return Err(canned::syntax("Syntax: AUTH mechanism [initial-response]"));
    }
    Ok(Command::Auth { mechanism, initial })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Mailbox;

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(
            parse("ehlo client.test"),
            Ok(Command::Ehlo("client.test".into()))
        );
        assert_eq!(parse("QuIt"), Ok(Command::Quit));
    }

    #[test]
    fn mail_with_all_parameters() {
        let c =
            parse("MAIL FROM:<a@b.test> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2Bx REQUIRETLS")
                .unwrap();
        let Command::Mail(Path::Mailbox(m), p) = c else {
            panic!()
        };
        assert_eq!(
            m,
            Mailbox {
                local: "a".into(),
                domain: "b.test".into()
            }
        );
        assert_eq!(p.size, Some(1000));
        assert_eq!(p.body, Body::EightBitMime);
        assert!(p.smtputf8);
        assert_eq!(p.ret, Some(Ret::Hdrs));
        assert_eq!(p.envid.as_deref(), Some("QQ+2Bx"));
        assert!(p.requiretls);
    }

    #[test]
    fn rcpt_keeps_dsn_parameters() {
        let c = parse("RCPT TO:<u@x.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;u+40x.test").unwrap();
        let Command::Rcpt(_, p) = c else { panic!() };
        assert_eq!(
            p.notify,
            Some(Notify {
                success: true,
                failure: false,
                delay: true
            })
        );
        assert_eq!(p.orcpt, Some(("rfc822".into(), "u+40x.test".into())));
    }

    #[test]
    fn unknown_and_duplicate_parameters_are_refused() {
        assert_eq!(parse("MAIL FROM:<a@b.test> FOO=1").unwrap_err().code, 555);
        assert_eq!(
            parse("MAIL FROM:<a@b.test> SIZE=1 SIZE=2")
                .unwrap_err()
                .code,
            501
        );
        assert_eq!(
            parse("RCPT TO:<a@b.test> NOTIFY=SOMETIMES")
                .unwrap_err()
                .code,
            501
        );
    }

    #[test]
    fn bdat_forms() {
        assert_eq!(
            parse("BDAT 100"),
            Ok(Command::Bdat {
                size: 100,
                last: false
            })
        );
        assert_eq!(
            parse("BDAT 0 LAST"),
            Ok(Command::Bdat {
                size: 0,
                last: true
            })
        );
        assert!(parse("BDAT x").is_err());
        assert!(parse("BDAT 1 LAST extra").is_err());
    }

    #[test]
    fn null_recipient_is_refused() {
        assert_eq!(
            parse("RCPT TO:<>").unwrap_err().status,
            Some(Status(5, 1, 3))
        );
    }

    #[test]
    fn http_request_is_foreign() {
        assert_eq!(parse("GET / HTTP/1.1"), Ok(Command::Foreign));
    }

    #[test]
    fn unknown_verb() {
        assert_eq!(parse("FROB").unwrap_err().code, 500);
    }
}
