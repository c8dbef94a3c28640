//! A policy request as Postfix writes it (SMTPD_POLICY_README): lines of
//! `name=value`, ended by an empty line. Parsing is plain logic over the
//! bytes read so far, with limits on everything a client controls: an
//! oversized or endless request, or a line that is not `name=value`, is
//! answered DUNNO (and counted) instead of crashing or waiting forever.

use std::collections::HashMap;

/// The longest request taken (Postfix's own are a few hundred bytes).
pub const MAX_REQUEST: usize = 64 * 1024;
/// The most attributes in one request (Postfix sends about 30).
pub const MAX_ATTRIBUTES: usize = 128;

/// One request: its attributes (the last value wins for a repeated name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    attrs: HashMap<String, String>,
}

/// What the bytes read so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// No complete request yet (read more).
    Incomplete,
    /// A request, and how many bytes it took.
    Request(Request, usize),
    /// Not a request: why, and how many bytes to skip (0: the stream is
    /// lost, answer and close).
    Malformed(&'static str, usize),
}

/// Parse the first request in `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let Some(end) = find_end(buf) else {
        return if buf.len() > MAX_REQUEST {
            Parsed::Malformed("request too long", 0)
        } else {
            Parsed::Incomplete
        };
    };
    if end > MAX_REQUEST {
        return Parsed::Malformed("request too long", 0);
    }
    let used = end + 2;
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut attrs = HashMap::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Parsed::Malformed("a line is not name=value", used);
        };
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Parsed::Malformed("an attribute name is not a name", used);
        }
        if attrs.len() >= MAX_ATTRIBUTES {
            return Parsed::Malformed("too many attributes", used);
        }
        attrs.insert(name.to_owned(), value.to_owned());
    }
    Parsed::Request(Request { attrs }, used)
}

/// Where the request ends: the first empty line (`\n\n`, or `\r\n\r\n`
/// from a hand-typed test), as the offset of its first newline.
fn find_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 1);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Request {
    /// A request from `name=value` pairs (tests, `policy-test`).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Request {
        Request {
            attrs: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// An attribute's value; empty values count as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attrs
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn state(&self) -> &str {
        self.get("protocol_state").unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_ends_at_the_empty_line() {
        let buf =
            b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\n\nnext";
        let Parsed::Request(r, used) = parse(buf) else {
            panic!("not parsed")
        };
        assert_eq!(used, buf.len() - 4);
        assert_eq!(r.state(), "RCPT");
        assert_eq!(r.get("client_address"), Some("192.0.2.1"));
        assert_eq!(r.get("sender"), None);
    }

    #[test]
    fn half_a_request_waits_for_more() {
        assert_eq!(
            parse(b"request=smtpd_access_policy\nprotocol_sta"),
            Parsed::Incomplete
        );
    }

    #[test]
    fn an_endless_request_is_cut_off() {
        let long = vec![b'a'; MAX_REQUEST + 1];
        assert_eq!(parse(&long), Parsed::Malformed("request too long", 0));
    }

    #[test]
    fn a_line_without_equals_skips_the_request() {
        let buf = b"GET / HTTP/1.0\n\nrequest=x\n\n";
        assert_eq!(
            parse(buf),
            Parsed::Malformed("a line is not name=value", 16)
        );
        assert!(matches!(parse(&buf[16..]), Parsed::Request(..)));
    }

    #[test]
    fn values_may_hold_equals_signs_and_be_empty() {
        let Parsed::Request(r, _) = parse(b"sender=a=b@x.test\nsasl_username=\n\n") else {
            panic!()
        };
        assert_eq!(r.get("sender"), Some("a=b@x.test"));
        assert_eq!(r.get("sasl_username"), None);
    }
}
