//! Envelope addresses as RFC 5321 4.1.2 defines them (with the RFC 6531
//! extension to UTF-8 when SMTPUTF8 was given). Parsing is strict: what is
//! accepted here is what the relay check and the mailbox lookup will see,
//! so there must be no second, looser reading of the same bytes anywhere.

use std::fmt;

/// RFC 5321 4.5.3.1.1-3 size limits.
pub const MAX_LOCAL_PART: usize = 64;
pub const MAX_DOMAIN: usize = 255;
pub const MAX_PATH: usize = 256;

/// `local@domain`. The local part is kept as sent (quotes included) so it
/// can be passed on unchanged; the domain is lower-cased (domains are
/// case-insensitive, RFC 5321 2.4).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mailbox {
    pub local: String,
    pub domain: String,
}

impl Mailbox {
    /// True when the domain is an address literal such as `[192.0.2.1]`.
    pub fn is_literal(&self) -> bool {
        self.domain.starts_with('[')
    }

    /// True when the local part is a quoted string.
    pub fn is_quoted(&self) -> bool {
        self.local.starts_with('"')
    }

    /// True when any part is outside ASCII (needs SMTPUTF8 to pass on).
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressError {
    Syntax,
    TooLong,
    NeedsSmtpUtf8,
}

impl AddressError {
    pub fn describe(self) -> &'static str {
        match self {
            AddressError::Syntax => "address syntax error",
            AddressError::TooLong => "address too long (RFC 5321 4.5.3.1)",
            AddressError::NeedsSmtpUtf8 => "non-ASCII address requires the SMTPUTF8 parameter",
        }
    }
}

/// What a `<...>` path held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    /// `<>`, the null reverse-path of bounces.
    Null,
    /// `<Postmaster>` without a domain (RCPT only, RFC 5321 4.1.1.3).
    Postmaster,
    Mailbox(Mailbox),
}

/// Split `<path> params` off the argument of MAIL FROM:/RCPT TO:. Returns
/// the path and the rest of the line (the ESMTP parameters).
pub fn parse_path(arg: &str, utf8: bool) -> Result<(Path, &str), AddressError> {
    let arg = arg.trim_start_matches(' ');
    let inner_start = arg.strip_prefix('<').ok_or(AddressError::Syntax)?;
    let end = closing_bracket(inner_start).ok_or(AddressError::Syntax)?;
    let inner = &inner_start[..end];
    let rest = &inner_start[end + 1..];
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return Err(AddressError::Syntax);
    }
    if inner.len() + 2 > MAX_PATH {
        return Err(AddressError::TooLong);
    }
    if inner.is_empty() {
        return Ok((Path::Null, rest));
    }
    if inner.eq_ignore_ascii_case("postmaster") {
        return Ok((Path::Postmaster, rest));
    }
    let mailbox_text = strip_source_route(inner)?;
    Ok((Path::Mailbox(parse_mailbox(mailbox_text, utf8)?), rest))
}

/// The `>` that closes the path: the first one outside a quoted string.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// RFC 5321 4.1.2 A-d-l (`@a,@b:`) source routes: "MUST accept ... SHOULD
/// ignore" (Appendix C), so the route is checked for syntax and dropped.
/// Only the final mailbox matters for relay decisions.
fn strip_source_route(inner: &str) -> Result<&str, AddressError> {
    if !inner.starts_with('@') {
        return Ok(inner);
    }
    let (route, mailbox) = inner.split_once(':').ok_or(AddressError::Syntax)?;
    for hop in route.split(',') {
        let domain = hop.strip_prefix('@').ok_or(AddressError::Syntax)?;
        if !is_domain(domain, false) {
            return Err(AddressError::Syntax);
        }
    }
    Ok(mailbox)
}

/// `local-part "@" ( domain / address-literal )`.
pub fn parse_mailbox(s: &str, utf8: bool) -> Result<Mailbox, AddressError> {
    if !utf8 && !s.is_ascii() {
        return Err(AddressError::NeedsSmtpUtf8);
    }
    let at = s.rfind('@').ok_or(AddressError::Syntax)?;
    let (local, domain) = (&s[..at], &s[at + 1..]);
    if local.len() > MAX_LOCAL_PART || domain.len() > MAX_DOMAIN {
        return Err(AddressError::TooLong);
    }
    let local_ok = if local.starts_with('"') {
        is_quoted_string(local)
    } else {
        is_dot_string(local, utf8)
    };
    if !local_ok || !(is_domain(domain, utf8) || is_address_literal(domain)) {
        return Err(AddressError::Syntax);
    }
    // Domain names compare without case; a general address literal's
    // text is kept as written.
    let domain = if domain.starts_with('[') {
        domain.to_owned()
    } else {
        domain.to_lowercase()
    };
    Ok(Mailbox {
        local: local.to_owned(),
        domain,
    })
}

fn is_atext(c: char, utf8: bool) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || (utf8 && !c.is_ascii())
}

/// `Atom *("." Atom)`: no leading, trailing or doubled dots.
fn is_dot_string(s: &str, utf8: bool) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(|c| is_atext(c, utf8)))
}

/// `DQUOTE *QcontentSMTP DQUOTE`.
fn is_quoted_string(s: &str) -> bool {
    let Some(body) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return false;
    };
    let mut bytes = body.bytes();
    while let Some(b) = bytes.next() {
        let ok = match b {
            b'\\' => matches!(bytes.next(), Some(32..=126)),
            b'"' => false,
            32..=126 => true,
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// `sub-domain *("." sub-domain)`; with SMTPUTF8 a label may be a U-label.
/// A trailing dot is not part of the grammar and is refused.
pub fn is_domain(s: &str, utf8: bool) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || (utf8 && !c.is_ascii()))
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !s.is_empty() && s.len() <= MAX_DOMAIN && s.split('.').all(label_ok)
}

/// `[IPv4]`, `[IPv6:...]` or a general literal `[tag:text]`.
fn is_address_literal(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
        return false;
    };
    // ABNF literals are case-insensitive: "Ipv6:" is the IPv6 tag too,
    // not a general literal (found by fuzz/address).
    if let Some(tag) = inner.get(..5)
        && tag.eq_ignore_ascii_case("IPv6:")
    {
        return inner[5..].parse::<std::net::Ipv6Addr>().is_ok();
    }
    if inner.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    match inner.split_once(':') {
        Some((tag, text)) => {
            is_domain(tag, false)
                && !text.is_empty()
                && text
                    .bytes()
                    .all(|b| (33..=90).contains(&b) || (94..=126).contains(&b))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(s: &str) -> Mailbox {
        match parse_path(s, false) {
            Ok((Path::Mailbox(m), "")) => m,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn lowercases_the_domain_and_keeps_the_local_part() {
        assert_eq!(
            mailbox("<Alice@Example.TEST>").to_string(),
            "Alice@example.test"
        );
    }

    #[test]
    fn null_and_postmaster_paths() {
        assert_eq!(parse_path("<>", false), Ok((Path::Null, "")));
        assert_eq!(
            parse_path("<PostMaster> NOTIFY=NEVER", false),
            Ok((Path::Postmaster, " NOTIFY=NEVER"))
        );
    }

    #[test]
    fn source_route_is_dropped_keeping_the_final_mailbox() {
        let m = mailbox("<@relay.test,@other.test:user@final.test>");
        assert_eq!(m.domain, "final.test");
    }

    #[test]
    fn quoted_local_part_may_hold_at_and_bracket() {
        let m = mailbox("<\"a@b>c\"@example.test>");
        assert_eq!(m.local, "\"a@b>c\"");
        assert!(m.is_quoted());
    }

    #[test]
    fn refuses_syntax_errors() {
        for bad in [
            "user@example.test",
            "<user@example.test",
            "<user>",
            "<user@>",
            "<@example.test>",
            "<a..b@example.test>",
            "<.a@example.test>",
            "<user@example.test.>",
            "<user@-bad.test>",
            "<user@exa mple.test>",
            "<user@[300.0.0.1]>",
            "<a\"b@example.test>",
            "<user@example.test>junk",
        ] {
            assert!(parse_path(bad, false).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn address_literals() {
        assert!(mailbox("<u@[192.0.2.1]>").is_literal());
        assert!(mailbox("<u@[IPv6:2001:db8::1]>").is_literal());
    }

    #[test]
    fn utf8_needs_smtputf8() {
        assert_eq!(
            parse_path("<josé@example.test>", false),
            Err(AddressError::NeedsSmtpUtf8)
        );
        assert!(parse_path("<josé@exämple.test>", true).is_ok());
    }

    #[test]
    fn length_limits() {
        let long_local = format!("<{}@example.test>", "a".repeat(65));
        assert_eq!(parse_path(&long_local, false), Err(AddressError::TooLong));
        let long_path = format!("<a@{}.test>", "b.".repeat(130));
        assert_eq!(parse_path(&long_path, false), Err(AddressError::TooLong));
    }
}

#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    /// Found by fuzz/address: a mailbox that parses must print as one
    /// that parses again.
    #[test]
    fn printed_mailboxes_parse_again() {
        for input in ["\u{13f}@[Ipv6:R]", "u@[X-Tag:Case]", "u@[IPV6:2001:DB8::1]"] {
            for utf8 in [false, true] {
                if let Ok(m) = parse_mailbox(input, utf8) {
                    let printed = m.to_string();
                    assert!(
                        parse_mailbox(&printed, true).is_ok(),
                        "{input:?} -> {printed:?}"
                    );
                }
            }
        }
    }
}
