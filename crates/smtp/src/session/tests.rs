//! Transcript tests: bytes in, exact replies out. Each is one behaviour.

use super::*;
use crate::address::Mailbox;

fn config(role: Role) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        hostname: "mx.test".into(),
        role,
        limits: Limits::default(),
        tls_available: true,
    })
}

fn peer() -> Peer {
    Peer {
        addr: "192.0.2.7:40000".parse().unwrap(),
        ptr: None,
    }
}

/// Drives a session as the server would, accepting every sender and
/// recipient in `local.test`, queueing each message as `Q<n>`.
struct Harness {
    s: Session,
    delivered: Vec<Transaction>,
    tls_started: bool,
    closed: bool,
}

impl Harness {
    fn new(role: Role) -> Harness {
        let mut s: Session = Session::new(config(role), peer(), None);
        s.start();
        let mut h = Harness {
            s,
            delivered: Vec::new(),
            tls_started: false,
            closed: false,
        };
        h.run();
        h
    }

    /// Feed bytes, carry out actions, return the replies as text.
    fn send(&mut self, bytes: &[u8]) -> String {
        self.s.feed(bytes);
        self.run()
    }

    fn run(&mut self) -> String {
        let mut out = Vec::new();
        while let Some(a) = self.s.poll() {
            match a {
                Action::Reply(r) => r.write_to(&mut out),
                Action::StartTls => self.tls_started = true,
                Action::CheckMail { .. } => self.s.answer_mail(Ok(())),
                Action::CheckRcpt { to, .. } => self.s.answer_rcpt(if to.domain == "local.test" {
                    Ok(())
                } else {
                    Err(Reply::new(554, Status(5, 7, 1), "Relay access denied"))
                }),
                Action::Deliver(t) => {
                    self.delivered.push(*t);
                    let id = self.delivered.len();
                    self.s.answer_data(Ok(format!("Q{id}")));
                }
                Action::Authenticate(c) => self.s.answer_auth(if c.password == "right" {
                    Ok(c.username)
                } else {
                    Err(Reply::new(
                        535,
                        Status(5, 7, 8),
                        "Authentication credentials invalid",
                    ))
                }),
                Action::Close => self.closed = true,
            }
        }
        String::from_utf8(out).unwrap()
    }

    fn codes(&mut self, bytes: &[u8]) -> Vec<u16> {
        self.send(bytes)
            .lines()
            .filter(|l| l.as_bytes().get(3) == Some(&b' '))
            .map(|l| l[..3].parse().unwrap())
            .collect()
    }
}

const ENVELOPE: &[u8] = b"EHLO c.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<u@local.test>\r\n";

#[test]
fn greets_with_hostname() {
    let mut s: Session = Session::new(config(Role::Mx), peer(), None);
    s.start();
    let Some(Action::Reply(r)) = s.poll() else {
        panic!()
    };
    assert_eq!(r.to_bytes(), b"220 mx.test ESMTP portcullis\r\n");
}

#[test]
fn ehlo_advertises_the_extensions() {
    let mut h = Harness::new(Role::Mx);
    let r = h.send(b"EHLO client.test\r\n");
    for ext in [
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "DSN",
        "STARTTLS",
    ] {
        assert!(
            r.contains(&format!("250-{ext}\r\n")) || r.contains(&format!("250 {ext}\r\n")),
            "{ext} in {r}"
        );
    }
}

#[test]
fn delivers_a_message_with_data() {
    let mut h = Harness::new(Role::Mx);
    h.send(ENVELOPE);
    assert_eq!(
        h.send(b"DATA\r\n"),
        "354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    assert_eq!(
        h.send(b"Subject: hi\r\n\r\n..dot\r\n.\r\n"),
        "250 2.0.0 Ok: queued as Q1\r\n"
    );
    assert_eq!(h.delivered[0].body, b"Subject: hi\r\n\r\n.dot\r\n");
    assert_eq!(
        h.delivered[0].recipients[0].mailbox,
        Mailbox {
            local: "u".into(),
            domain: "local.test".into()
        }
    );
}

#[test]
fn pipelined_transaction_gets_replies_in_order() {
    let mut h = Harness::new(Role::Mx);
    let mut all = ENVELOPE.to_vec();
    all.extend_from_slice(b"DATA\r\nx\r\n.\r\nQUIT\r\n");
    assert_eq!(h.codes(&all), vec![250, 250, 250, 354, 250, 221]);
    assert!(h.closed);
}

#[test]
fn delivers_a_message_with_bdat_chunks() {
    let mut h = Harness::new(Role::Mx);
    h.send(ENVELOPE);
    assert_eq!(
        h.send(b"BDAT 4\r\nab\r\n"),
        "250 2.0.0 4 octets received\r\n"
    );
    assert_eq!(h.codes(b"BDAT 3 LAST\r\nc\r\n"), vec![250]);
    assert_eq!(h.delivered[0].body, b"ab\r\nc\r\n");
}

#[test]
fn bdat_chunk_split_across_reads() {
    let mut h = Harness::new(Role::Mx);
    h.send(ENVELOPE);
    assert_eq!(h.send(b"BDAT 7 LAST\r\nab"), "");
    assert_eq!(h.codes(b"c\r\n\r\nNOOP\r\n"), vec![250, 250]);
    assert_eq!(h.delivered[0].body, b"abc\r\n\r\n");
}

#[test]
fn bdat_without_transaction_still_skips_the_chunk() {
    let mut h = Harness::new(Role::Mx);
    h.send(b"EHLO c.test\r\n");
    // The chunk holds something that looks like a command; it must not run.
    assert_eq!(
        h.codes(b"BDAT 12 LAST\r\nRSET\r\nQUIT\r\nNOOP\r\n"),
        vec![503, 250]
    );
    assert!(!h.closed);
}

#[test]
fn bdat_with_bare_lf_is_refused() {
    let mut h = Harness::new(Role::Mx);
    h.send(ENVELOPE);
    assert_eq!(h.codes(b"BDAT 4 LAST\r\na\nb\n"), vec![554]);
    assert!(h.delivered.is_empty());
}

#[test]
fn rejects_bare_lf_in_data_and_closes() {
    for variant in [
        &b"x\n.\nMAIL FROM:<b@remote.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\ny\r\n.\r\n"[..],
        b"x\n.\r\nMAIL FROM:<b@remote.test>\r\n",
        b"x\r\n.\nMAIL FROM:<b@remote.test>\r\n",
        b"x\r.\r\nMAIL FROM:<b@remote.test>\r\n",
        b"x\r\n.\rMAIL FROM:<b@remote.test>\r\n",
        b"x\n.\n",
        b"x\r\n.\r",
    ] {
        let mut h = Harness::new(Role::Mx);
        h.send(ENVELOPE);
        h.send(b"DATA\r\n");
        let r = h.send(variant);
        let r = r + &h.send(b"\r\n.\r\n");
        assert!(r.starts_with("554 5.6.0"), "{variant:?}: {r}");
        assert!(h.closed, "{variant:?}");
        assert!(h.delivered.is_empty(), "{variant:?}");
    }
}

#[test]
fn rejects_bare_lf_in_command_line_and_closes() {
    let mut h = Harness::new(Role::Mx);
    assert!(h.send(b"EHLO c.test\n").starts_with("500 5.5.2"));
    assert!(h.closed);
}

#[test]
fn discards_commands_pipelined_after_starttls() {
    let mut h = Harness::new(Role::Mx);
    h.send(b"EHLO c.test\r\n");
    let r = h.send(b"STARTTLS\r\nMAIL FROM:<evil@remote.test>\r\n");
    assert_eq!(r, "220 2.0.0 Ready to start TLS\r\n");
    assert!(h.tls_started);
    h.s.tls_established(TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "X".into(),
    });
    // The session starts from scratch: no HELO is remembered, and the
    // injected MAIL was never executed.
    assert!(
        h.send(b"RCPT TO:<u@local.test>\r\n")
            .starts_with("503 5.5.1")
    );
    assert!(
        h.send(b"MAIL FROM:<a@remote.test>\r\n")
            .starts_with("503 5.5.1 Send EHLO")
    );
    assert!(!h.send(b"EHLO c.test\r\n").contains("STARTTLS"));
}

#[test]
fn over_long_command_line_is_refused_and_the_session_recovers() {
    let mut h = Harness::new(Role::Mx);
    let mut long = b"NOOP ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 600));
    long.extend_from_slice(b"\r\n");
    assert!(h.send(&long).starts_with("500 5.5.2 Line too long"));
    assert_eq!(h.codes(b"NOOP\r\n"), vec![250]);
}

#[test]
fn over_long_line_without_newline_is_refused_once() {
    let mut h = Harness::new(Role::Mx);
    assert_eq!(h.codes(&[b'x'; 600]), vec![500]);
    assert_eq!(h.codes(&[b'x'; 600]), Vec::<u16>::new());
    assert_eq!(h.codes(b"\r\nNOOP\r\n"), vec![250]);
}

#[test]
fn too_many_recipients_get_452() {
    let mut h = Harness::new(Role::Mx);
    h.send(b"EHLO c.test\r\nMAIL FROM:<a@remote.test>\r\n");
    for i in 0..100 {
        assert_eq!(
            h.codes(format!("RCPT TO:<u{i}@local.test>\r\n").as_bytes()),
            vec![250]
        );
    }
    assert!(
        h.send(b"RCPT TO:<u100@local.test>\r\n")
            .starts_with("452 4.5.3")
    );
}

#[test]
fn size_over_limit_is_refused_at_mail() {
    let mut h = Harness::new(Role::Mx);
    h.send(b"EHLO c.test\r\n");
    assert!(
        h.send(b"MAIL FROM:<a@remote.test> SIZE=999999999\r\n")
            .starts_with("552 5.3.4")
    );
}

#[test]
fn oversize_data_is_refused_after_the_end() {
    let mut cfg = (*config(Role::Mx)).clone();
    cfg.limits.max_message_size = 100;
    let mut h = Harness::new(Role::Mx);
    h.s = Session::new(Arc::new(cfg), peer(), None);
    h.send(ENVELOPE);
    h.send(b"DATA\r\n");
    let mut body = vec![b'a'; 200];
    body.extend_from_slice(b"\r\n.\r\n");
    assert!(h.send(&body).starts_with("552 5.3.4"));
    assert!(h.delivered.is_empty());
    assert_eq!(h.codes(b"NOOP\r\n"), vec![250]);
}

#[test]
fn relay_rejection_comes_from_the_verdict() {
    let mut h = Harness::new(Role::Mx);
    h.send(b"EHLO c.test\r\nMAIL FROM:<a@remote.test>\r\n");
    assert!(
        h.send(b"RCPT TO:<x@elsewhere.test>\r\n")
            .starts_with("554 5.7.1")
    );
}

#[test]
fn data_without_recipients_is_refused() {
    let mut h = Harness::new(Role::Mx);
    h.send(b"EHLO c.test\r\nMAIL FROM:<a@remote.test>\r\n");
    assert!(h.send(b"DATA\r\n").starts_with("554 5.5.1"));
}

#[test]
fn submission_requires_authentication_even_for_local_recipients() {
    let mut h = tls_submission();
    h.send(b"EHLO c.test\r\n");
    assert_eq!(
        h.send(b"MAIL FROM:<a@local.test>\r\n"),
        "530 5.7.0 Authentication required\r\n"
    );
}

#[test]
fn mail_before_starttls_on_submission_asks_for_starttls() {
    // RFC 3207 4: AUTH is not offered yet, so the client is told the step
    // it can take.
    let mut h = Harness::new(Role::Submission);
    h.send(b"EHLO c.test\r\n");
    assert_eq!(
        h.send(b"MAIL FROM:<a@local.test>\r\n"),
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
}

#[test]
fn help_lists_starttls_only_while_it_can_be_used() {
    let mut h = Harness::new(Role::Submission);
    assert!(h.send(b"HELP\r\n").contains("STARTTLS"));
    // After STARTTLS, and on 465 where TLS came first, it is gone.
    let mut h = tls_submission();
    let r = h.send(b"HELP\r\n");
    assert!(r.starts_with("214 2.0.0"), "{r}");
    assert!(!r.contains("STARTTLS"), "{r}");
    let mut s: Session = Session::new(
        config(Role::Submissions),
        peer(),
        Some(TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "X".into(),
        }),
    );
    s.start();
    s.feed(b"EHLO c.test\r\nHELP\r\n");
    let mut out = Vec::new();
    while let Some(a) = s.poll() {
        if let Action::Reply(r) = a {
            r.write_to(&mut out);
        }
    }
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("214 2.0.0"), "{out}");
    assert!(!out.contains("STARTTLS"), "{out}");
}

#[test]
fn too_many_errors_close_the_session() {
    let mut h = Harness::new(Role::Mx);
    let codes = h.codes(&b"BOGUS\r\n".repeat(25));
    assert_eq!(codes.len(), 21);
    assert_eq!(codes.last(), Some(&421));
    assert!(h.closed);
}

#[test]
fn early_talker_is_refused() {
    let mut s: Session = Session::new(config(Role::Mx), peer(), None);
    s.refuse_early_talker();
    let Some(Action::Reply(r)) = s.poll() else {
        panic!()
    };
    assert_eq!(r.code, 554);
    assert!(matches!(s.poll(), Some(Action::Close)));
}

#[test]
fn timeout_gives_421() {
    let mut h = Harness::new(Role::Mx);
    h.s.timed_out();
    assert!(h.run().starts_with("421 4.4.2"));
    assert!(h.closed);
}

#[test]
fn http_request_closes_the_session() {
    let mut h = Harness::new(Role::Mx);
    assert_eq!(h.codes(b"GET / HTTP/1.1\r\n"), vec![500]);
    assert!(h.closed);
}

#[test]
fn every_reply_after_ehlo_carries_an_enhanced_code() {
    let mut h = Harness::new(Role::Mx);
    h.send(b"EHLO c.test\r\n");
    let r = h.send(b"NOOP\r\nVRFY u\r\nHELP\r\nRSET\r\nFROB\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<u@local.test>\r\nBDAT 3 LAST\r\nx\r\n");
    for line in r.lines() {
        let esc = line[4..].split(' ').next().unwrap();
        assert_eq!(esc.split('.').count(), 3, "{line}");
    }
}

#[test]
fn received_header_names_protocol_and_single_recipient() {
    let mut h = Harness::new(Role::Mx);
    h.send(ENVELOPE);
    h.send(b"DATA\r\nx\r\n.\r\n");
    let t = &h.delivered[0];
    let r = crate::received_header(t, "mx.test", "ABC", std::time::UNIX_EPOCH);
    assert!(
        r.starts_with(
            "Received: from c.test ([192.0.2.7])\r\n\tby mx.test (portcullis) with ESMTP id ABC"
        ),
        "{r}"
    );
    assert!(r.contains("for <u@local.test>;"), "{r}");
    assert!(r.ends_with("Thu, 01 Jan 1970 00:00:00 +0000\r\n"), "{r}");
}

/// A submission session with TLS in place.
fn tls_submission() -> Harness {
    let mut h = Harness::new(Role::Submission);
    h.s.tls_established(TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "X".into(),
    });
    h
}

mod auth;
