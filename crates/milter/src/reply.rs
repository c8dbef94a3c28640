//! A milter's own SMTP reply (`smfi_setreply`, `smfi_setmlreply`: the
//! SMFIR_REPLYCODE text) kept to a valid SMTP reply: a 4xx or 5xx code
//! on every line, at most 32 lines of at most 980 characters (libmilter's
//! own limits), an enhanced status code of the same class (the default
//! `x.7.1` where the milter gave none), no control characters. What does
//! not fit is not passed through: the caller uses its default reply.

use portcullis_smtp::{Reply, Status};

const MAX_LINES: usize = 32;
const MAX_LINE: usize = 980;

/// The reply a milter's text stands for, or None when it is not a valid
/// 4xx/5xx SMTP reply.
pub fn parse_reply(text: &str) -> Option<Reply> {
    let text = text.trim_end_matches(['\r', '\n']);
    let lines: Vec<&str> = text.split('\n').map(|l| l.trim_end_matches('\r')).collect();
    if lines.is_empty() || lines.len() > MAX_LINES {
        return None;
    }
    let mut code = None;
    let mut status = None;
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.len() > MAX_LINE || !line.is_char_boundary(3) {
            return None;
        }
        let (digits, rest) = line.split_at(3);
        let c: u16 = digits.parse().ok().filter(|c| (400..600).contains(c))?;
        if *code.get_or_insert(c) != c {
            return None;
        }
        // "550 text", "550-text", or the bare code on the last line.
        let last = i + 1 == lines.len();
        let rest = match rest.as_bytes().first() {
            None => "",
            Some(b' ') => &rest[1..],
            Some(b'-') if !last => &rest[1..],
            _ => return None,
        };
        let (s, words) = split_status(rest);
        if let Some(s) = s {
            if u16::from(s.0) != c / 100 {
                return None;
            }
            status.get_or_insert(s);
        }
        out.push(words.to_owned());
    }
    let code = code?;
    let class = u8::try_from(code / 100).ok()?;
    let mut reply = Reply::new(
        code,
        status.unwrap_or(Status(class, 7, 1)),
        out.first().cloned().unwrap_or_default(),
    );
    for line in out.into_iter().skip(1) {
        reply = reply.with_line(line);
    }
    Some(reply)
}

/// An enhanced status code at the start of `text` (RFC 3463: class 2, 4
/// or 5, subject and detail of at most three digits), and the words after.
fn split_status(text: &str) -> (Option<Status>, &str) {
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    let parts: Vec<&str> = word.split('.').collect();
    let ok = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit())
    };
    if parts.len() == 3 && ok(parts[0], 1) && ok(parts[1], 3) && ok(parts[2], 3) {
        let class: u8 = parts[0].parse().unwrap_or(0);
        if let (Ok(subject), Ok(detail)) = (parts[1].parse(), parts[2].parse())
            && matches!(class, 2 | 4 | 5)
        {
            return (Some(Status(class, subject, detail)), rest);
        }
    }
    (None, text)
}

/// Postfix's words when a milter rejects without a text of its own.
pub fn default_reject() -> Reply {
    Reply::new(550, Status(5, 7, 1), "Command rejected")
}

/// Postfix's words when a milter tempfails without a text of its own.
pub fn default_tempfail() -> Reply {
    Reply::new(
        451,
        Status(4, 7, 1),
        "Service unavailable - try again later",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_milter_reply_keeps_its_code_status_and_text() {
        let r = parse_reply("554 5.7.1 Virus found: Eicar-Test-Signature").unwrap();
        assert_eq!(r.code, 554);
        assert_eq!(r.status, Some(Status(5, 7, 1)));
        assert_eq!(r.lines, ["Virus found: Eicar-Test-Signature"]);
    }

    #[test]
    fn a_multiline_reply_keeps_its_lines() {
        let r = parse_reply("550-5.7.0 first\r\n550 5.7.0 second").unwrap();
        assert_eq!(r.lines, ["first", "second"]);
        assert_eq!(r.to_bytes(), b"550-5.7.0 first\r\n550 5.7.0 second\r\n");
    }

    #[test]
    fn a_reply_without_status_gets_the_policy_default() {
        let r = parse_reply("451 try later").unwrap();
        assert_eq!(r.status, Some(Status(4, 7, 1)));
        assert_eq!(r.lines, ["try later"]);
    }

    #[test]
    fn what_is_not_a_failure_reply_is_refused() {
        for bad in [
            "250 2.0.0 ok",
            "650 x",
            "55",
            "5x0 bad",
            "550 4.7.1 class differs",
            "550-5.7.1 a\r\n451 4.7.1 b",
            "550-no last line-",
            "550xno separator",
            "",
        ] {
            assert_eq!(parse_reply(bad), None, "{bad:?}");
        }
        assert_eq!(parse_reply(&format!("550 {}", "x".repeat(2000))), None);
        let many = vec!["550-5.7.1 x"; 40].join("\r\n");
        assert_eq!(parse_reply(&many), None);
    }

    #[test]
    fn control_characters_never_reach_the_wire() {
        let r = parse_reply("550 5.7.1 bad\u{7}text").unwrap();
        assert_eq!(r.lines, ["bad?text"]);
    }
}
