//! What milters asked to change, applied to the message and its envelope
//! (sans-IO): headers added, inserted, changed and deleted, the body
//! replaced, recipients added and deleted, the sender changed. Fields a
//! milter leaves alone keep their bytes (a DKIM signature over them stays
//! valid); what a milter writes is kept to CRLF lines, each continuation
//! starting with white space, so no edit can start a new header field or
//! end the header block.

use crate::proto::Response;

/// One header field as it stands in the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// Everything after the colon, folds included, without the final
    /// CRLF: bytes, since legacy mail carries 8-bit headers that are not
    /// UTF-8 and they must come out as they went in.
    pub raw_value: Vec<u8>,
}

impl Field {
    /// The value as a milter sees it: folds as bare LF (as Postfix and
    /// sendmail send them), the leading space kept only when asked
    /// (SMFIP_HDR_LEADSPC).
    pub fn value_for_milter(&self, leading_space: bool) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.raw_value.len());
        let mut i = 0;
        while i < self.raw_value.len() {
            if self.raw_value[i..].starts_with(b"\r\n") {
                i += 1;
                continue;
            }
            v.push(self.raw_value[i]);
            i += 1;
        }
        if !leading_space && v.first() == Some(&b' ') {
            v.remove(0);
        }
        v
    }
}

/// A message cut into its header fields and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub fields: Vec<Field>,
    /// Whether a blank line ended the fields (a message cut at a line
    /// that was no field has none, and gets none).
    pub separator: bool,
    /// After the blank line (CRLF lines).
    pub body: Vec<u8>,
}

impl Message {
    /// Cut `data` (CRLF lines) at the first line that is neither a field
    /// nor a fold; a blank line there is the separator.
    pub fn parse(data: &[u8]) -> Message {
        let mut fields: Vec<Field> = Vec::new();
        let mut separator = false;
        let mut at = 0;
        while at < data.len() {
            let end = find_crlf(&data[at..]).map_or(data.len(), |e| at + e);
            let line = &data[at..end];
            let next = (end + 2).min(data.len());
            if line.is_empty() && end < data.len() {
                separator = true;
                at = next;
                break;
            }
            if matches!(line.first(), Some(b' ' | b'\t')) {
                match fields.last_mut() {
                    Some(f) => {
                        f.raw_value.extend_from_slice(b"\r\n");
                        f.raw_value.extend_from_slice(line);
                        at = next;
                        continue;
                    }
                    None => break,
                }
            }
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                break;
            };
            let Ok(name) = std::str::from_utf8(&line[..colon]) else {
                break;
            };
            if !valid_name(name) {
                break;
            }
            fields.push(Field {
                name: name.to_owned(),
                raw_value: line[colon + 1..].to_vec(),
            });
            at = next;
        }
        Message {
            fields,
            separator,
            body: data[at.min(data.len())..].to_vec(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 64 * self.fields.len() + 2);
        for f in &self.fields {
            out.extend_from_slice(f.name.as_bytes());
            out.push(b':');
            out.extend_from_slice(&f.raw_value);
            out.extend_from_slice(b"\r\n");
        }
        if self.separator {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(&self.body);
        out
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// RFC 5322 §3.6.8: printable ASCII but the colon, at least one.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// A value a milter wrote, as it goes after the colon: every line break
/// CRLF, every continuation line starting with white space (a tab is
/// added where the milter's did not), no other control bytes but tab.
fn folded_value(value: &str, leading_space: bool) -> Vec<u8> {
    let mut out = String::with_capacity(value.len() + 2);
    if !leading_space {
        out.push(' ');
    }
    let normal = value.replace("\r\n", "\n").replace('\r', "\n");
    for (i, line) in normal.split('\n').enumerate() {
        if i > 0 {
            out.push_str("\r\n");
            if !line.starts_with([' ', '\t']) {
                out.push('\t');
            }
        }
        out.extend(line.chars().filter(|c| *c == '\t' || !c.is_control()));
    }
    out.into_bytes()
}

/// What the milters changed in the envelope.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvelopeEdits {
    /// The new sender (without angle brackets; empty is `<>`).
    pub sender: Option<String>,
    pub add_recipients: Vec<String>,
    pub delete_recipients: Vec<String>,
}

impl EnvelopeEdits {
    pub fn is_empty(&self) -> bool {
        self == &EnvelopeEdits::default()
    }
}

/// An address as a milter writes it, `<a@b>` or `a@b`, without brackets.
pub fn bare_address(a: &str) -> String {
    let a = a.trim();
    let a = a.strip_prefix('<').unwrap_or(a);
    let a = a.strip_suffix('>').unwrap_or(a);
    a.chars().filter(|c| !c.is_control()).collect()
}

/// Apply one milter's modifications, in the order it sent them (as
/// libmilter and Postfix do), to `msg` and `env`. A modification the
/// milter did not negotiate, or whose header name is not a name, is left
/// out and named in the returned list.
pub fn apply(
    msg: &mut Message,
    env: &mut EnvelopeEdits,
    mods: &[Response],
    negotiated: &crate::proto::Negotiated,
) -> Vec<&'static str> {
    use crate::proto::{action, step};
    let lead = negotiated.skips(step::HDR_LEADSPC);
    let mut ignored = Vec::new();
    let mut new_body: Option<Vec<u8>> = None;
    for m in mods {
        let allowed = match m {
            Response::AddHeader { .. } => negotiated.may(action::ADDHDRS),
            Response::InsertHeader { .. } => negotiated.may(action::ADDHDRS),
            Response::ChangeHeader { .. } => negotiated.may(action::CHGHDRS),
            Response::AddRcpt { args: None, .. } => negotiated.may(action::ADDRCPT),
            Response::AddRcpt { .. } => negotiated.may(action::ADDRCPT_PAR),
            Response::DelRcpt(_) => negotiated.may(action::DELRCPT),
            Response::ChangeFrom { .. } => negotiated.may(action::CHGFROM),
            Response::ReplaceBody(_) => negotiated.may(action::CHGBODY),
            _ => true,
        };
        let bad_name = match m {
            Response::AddHeader { name, .. }
            | Response::InsertHeader { name, .. }
            | Response::ChangeHeader { name, .. } => !valid_name(name),
            _ => false,
        };
        if !allowed || bad_name {
            ignored.push(m.kind());
            continue;
        }
        match m {
            Response::AddHeader { name, value } => msg.fields.push(Field {
                name: name.clone(),
                raw_value: folded_value(value, lead),
            }),
            Response::InsertHeader { index, name, value } => {
                let at = usize::try_from(*index)
                    .unwrap_or(usize::MAX)
                    .min(msg.fields.len());
                let field = Field {
                    name: name.clone(),
                    raw_value: folded_value(value, lead),
                };
                msg.fields.insert(at, field);
            }
            Response::ChangeHeader { index, name, value } => {
                let nth = msg
                    .fields
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.name.eq_ignore_ascii_case(name))
                    .nth(usize::try_from(index.saturating_sub(1)).unwrap_or(usize::MAX))
                    .map(|(i, _)| i);
                match (nth, value.is_empty()) {
                    (Some(i), true) => {
                        msg.fields.remove(i);
                    }
                    (Some(i), false) => msg.fields[i].raw_value = folded_value(value, lead),
                    // libmilter: changing a field that is not there adds it.
                    (None, false) => msg.fields.push(Field {
                        name: name.clone(),
                        raw_value: folded_value(value, lead),
                    }),
                    (None, true) => {}
                }
            }
            Response::AddRcpt { rcpt, .. } => {
                let a = bare_address(rcpt);
                env.delete_recipients
                    .retain(|d| !d.eq_ignore_ascii_case(&a));
                env.add_recipients.push(a);
            }
            Response::DelRcpt(rcpt) => {
                let a = bare_address(rcpt);
                env.add_recipients.retain(|d| !d.eq_ignore_ascii_case(&a));
                env.delete_recipients.push(a);
            }
            Response::ChangeFrom { from, .. } => env.sender = Some(bare_address(from)),
            Response::ReplaceBody(chunk) => {
                new_body
                    .get_or_insert_with(Vec::new)
                    .extend_from_slice(chunk);
            }
            _ => {}
        }
    }
    if let Some(body) = new_body {
        msg.body = crlf_lines(&body);
    }
    ignored
}

/// A replacement body as the queue keeps content: CRLF lines, ending in
/// CRLF. Bare LF and bare CR become CRLF.
fn crlf_lines(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 32 + 2);
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' if body.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Negotiated, action, step};

    fn all() -> Negotiated {
        Negotiated {
            version: 6,
            actions: action::ALL,
            protocol: 0,
            macros: vec![],
        }
    }

    const MSG: &[u8] =
        b"From: a@b.test\r\nSubject: hi\r\n there\r\nX-A: 1\r\nX-A: 2\r\n\r\nbody\r\n";

    fn edited(mods: &[Response]) -> (Vec<u8>, EnvelopeEdits) {
        let mut m = Message::parse(MSG);
        let mut e = EnvelopeEdits::default();
        assert!(apply(&mut m, &mut e, mods, &all()).is_empty());
        (m.to_bytes(), e)
    }

    #[test]
    fn an_untouched_message_keeps_its_bytes() {
        assert_eq!(Message::parse(MSG).to_bytes(), MSG);
        let m = Message::parse(MSG);
        assert_eq!(m.fields[1].value_for_milter(false), b"hi\n there");
        assert_eq!(m.fields[1].value_for_milter(true), b" hi\n there");
    }

    #[test]
    fn headers_are_added_inserted_changed_and_deleted() {
        let (out, _) = edited(&[
            Response::AddHeader {
                name: "X-End".into(),
                value: "e".into(),
            },
            Response::InsertHeader {
                index: 0,
                name: "X-Top".into(),
                value: "t".into(),
            },
            Response::ChangeHeader {
                index: 2,
                name: "x-a".into(),
                value: "two".into(),
            },
            Response::ChangeHeader {
                index: 1,
                name: "Subject".into(),
                value: String::new(),
            },
        ]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "X-Top: t\r\nFrom: a@b.test\r\nX-A: 1\r\nX-A: two\r\nX-End: e\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn a_written_value_cannot_start_a_field_or_end_the_headers() {
        let (out, _) = edited(&[Response::AddHeader {
            name: "X-Evil".into(),
            value: "a\r\nBcc: x@y\n\nbody".into(),
        }]);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("X-Evil: a\r\n\tBcc: x@y\r\n\t\r\n\tbody\r\n\r\nbody\r\n"),
            "{text}"
        );
        let reparsed = Message::parse(text.as_bytes());
        assert_eq!(reparsed.fields.len(), 5);
    }

    #[test]
    fn the_body_is_replaced_in_crlf_lines() {
        let (out, _) = edited(&[
            Response::ReplaceBody(b"new\nbo".to_vec()),
            Response::ReplaceBody(b"dy".to_vec()),
        ]);
        assert!(out.ends_with(b"\r\n\r\nnew\r\nbody\r\n"));
    }

    #[test]
    fn the_envelope_changes_are_collected() {
        let (_, e) = edited(&[
            Response::ChangeFrom {
                from: "<new@b.test>".into(),
                args: None,
            },
            Response::AddRcpt {
                rcpt: "<c@d.test>".into(),
                args: None,
            },
            Response::DelRcpt("<old@d.test>".into()),
        ]);
        assert_eq!(e.sender.as_deref(), Some("new@b.test"));
        assert_eq!(e.add_recipients, ["c@d.test"]);
        assert_eq!(e.delete_recipients, ["old@d.test"]);
    }

    #[test]
    fn what_was_not_negotiated_is_left_out() {
        let mut m = Message::parse(MSG);
        let mut e = EnvelopeEdits::default();
        let n = Negotiated {
            actions: action::ADDHDRS,
            protocol: step::HDR_LEADSPC,
            ..all()
        };
        let ignored = apply(
            &mut m,
            &mut e,
            &[
                Response::DelRcpt("x@y".into()),
                Response::AddHeader {
                    name: "Bad Name".into(),
                    value: "v".into(),
                },
                Response::AddHeader {
                    name: "X-L".into(),
                    value: "raw".into(),
                },
            ],
            &n,
        );
        assert_eq!(ignored, ["delrcpt", "addheader"]);
        assert!(e.is_empty());
        assert_eq!(
            m.fields.last().unwrap().raw_value,
            b"raw",
            "leading space is the milter's"
        );
    }

    #[test]
    fn a_message_without_a_blank_line_is_all_headers_or_body_at_the_first_non_field() {
        let m = Message::parse(b"X: 1\r\nnot a field\r\n");
        assert_eq!(m.fields.len(), 1);
        assert_eq!(m.body, b"not a field\r\n");
        assert_eq!(m.to_bytes(), b"X: 1\r\nnot a field\r\n");
        let all_headers = Message::parse(b"X: 1\r\nY: 2\r\n");
        assert_eq!(
            (all_headers.fields.len(), all_headers.separator),
            (2, false)
        );
        assert_eq!(all_headers.to_bytes(), b"X: 1\r\nY: 2\r\n");
    }

    #[test]
    fn eight_bit_headers_that_are_not_utf8_keep_their_bytes() {
        let legacy = b"Subject: caf\xe9\r\n \xe0 la carte\r\nFrom: a@b\r\n\r\nbody\r\n";
        let mut m = Message::parse(legacy);
        assert_eq!(m.fields.len(), 2);
        assert_eq!(m.to_bytes(), legacy);
        let mut e = EnvelopeEdits::default();
        let add = Response::AddHeader {
            name: "X-A".into(),
            value: "1".into(),
        };
        apply(&mut m, &mut e, &[add], &all());
        assert!(
            m.to_bytes()
                .starts_with(b"Subject: caf\xe9\r\n \xe0 la carte\r\nFrom: a@b\r\nX-A: 1\r\n\r\n")
        );
    }
}
