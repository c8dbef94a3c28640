//! AUTH on the submission ports: transcripts, one behaviour each.

use super::*;

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn auth_is_not_offered_or_accepted_before_tls() {
    let mut h = Harness::new(Role::Submission);
    assert!(!h.send(b"EHLO c.test\r\n").contains("AUTH"));
    let r = h.send(format!("AUTH PLAIN {}\r\n", b64("\0u@local.test\0right")).as_bytes());
    assert!(r.starts_with("538 5.7.11"), "{r}");
}

#[test]
fn auth_is_never_offered_on_mx() {
    let mut h = Harness::new(Role::Mx);
    h.s.tls_established(TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "X".into(),
    });
    assert!(!h.send(b"EHLO c.test\r\n").contains("AUTH"));
    assert!(h.send(b"AUTH PLAIN\r\n").starts_with("503"));
}

#[test]
fn auth_plain_with_initial_response_then_mail_carries_the_identity() {
    let mut h = tls_submission();
    assert!(h.send(b"EHLO c.test\r\n").contains("250-AUTH PLAIN LOGIN"));
    let r = h.send(format!("AUTH PLAIN {}\r\n", b64("\0u@local.test\0right")).as_bytes());
    assert_eq!(r, "235 2.7.0 Authentication successful\r\n");
    h.send(b"MAIL FROM:<u@local.test>\r\nRCPT TO:<x@local.test>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(h.delivered[0].auth.as_deref(), Some("u@local.test"));
    assert_eq!(h.delivered[0].protocol(), "ESMTPSA");
}

#[test]
fn auth_plain_with_empty_challenge() {
    let mut h = tls_submission();
    h.send(b"EHLO c.test\r\n");
    assert_eq!(h.send(b"AUTH PLAIN\r\n"), "334 \r\n");
    assert!(
        h.send(format!("{}\r\n", b64("u@local.test\0u@local.test\0right")).as_bytes())
            .starts_with("235")
    );
}

#[test]
fn auth_login_exchange() {
    let mut h = tls_submission();
    h.send(b"EHLO c.test\r\n");
    assert_eq!(h.send(b"AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(
        h.send(format!("{}\r\n", b64("u@local.test")).as_bytes()),
        "334 UGFzc3dvcmQ6\r\n"
    );
    assert!(
        h.send(format!("{}\r\n", b64("right")).as_bytes())
            .starts_with("235")
    );
}

#[test]
fn wrong_password_gets_535_and_may_retry() {
    let mut h = tls_submission();
    h.send(b"EHLO c.test\r\n");
    let r = h.send(format!("AUTH PLAIN {}\r\n", b64("\0u@local.test\0wrong")).as_bytes());
    assert!(r.starts_with("535 5.7.8"), "{r}");
    assert!(
        h.send(b"MAIL FROM:<u@local.test>\r\n")
            .starts_with("530 5.7.0")
    );
    let r = h.send(format!("AUTH PLAIN {}\r\n", b64("\0u@local.test\0right")).as_bytes());
    assert!(r.starts_with("235"));
}

#[test]
fn auth_cancel_and_garbage() {
    let mut h = tls_submission();
    h.send(b"EHLO c.test\r\n");
    h.send(b"AUTH LOGIN\r\n");
    assert!(h.send(b"*\r\n").starts_with("501 5.0.0"));
    assert!(
        h.send(b"AUTH PLAIN !!!notbase64\r\n")
            .starts_with("501 5.5.2")
    );
    assert!(h.send(b"AUTH CRAM-MD5\r\n").starts_with("504 5.5.4"));
}

#[test]
fn credentials_debug_hides_the_password() {
    let c = Credentials {
        username: "u".into(),
        password: "hunter2".into(),
        mechanism: "PLAIN",
    };
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn requiretls_is_offered_only_over_tls() {
    let mut h = Harness::new(Role::Mx);
    assert!(!h.send(b"EHLO c.test\r\n").contains("REQUIRETLS"));
    h.send(b"STARTTLS\r\n");
    h.s.tls_established(TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "X".into(),
    });
    assert!(h.send(b"EHLO c.test\r\n").contains("250-REQUIRETLS\r\n"));
}

#[test]
fn requiretls_without_tls_is_refused() {
    let mut h = Harness::new(Role::Mx);
    h.send(b"EHLO c.test\r\n");
    let r = h.send(b"MAIL FROM:<a@remote.test> REQUIRETLS\r\n");
    assert!(
        r.starts_with("530 5.7.10 REQUIRETLS needs a TLS session"),
        "{r}"
    );
}

/// Drives a session whose driver hands over a number with each accepted
/// MAIL FROM, as the way in hands over its state of the transaction.
fn numbered_senders(input: &[u8]) -> (String, Vec<u32>) {
    let mut s: Session<u32> = Session::new(config(Role::Mx), peer(), None);
    s.start();
    s.feed(input);
    let (mut out, mut delivered, mut next) = (Vec::new(), Vec::new(), 0);
    while let Some(a) = s.poll() {
        match a {
            Action::Reply(r) => r.write_to(&mut out),
            Action::CheckMail { .. } => {
                next += 1;
                s.answer_mail(Ok(next));
            }
            Action::CheckRcpt { .. } => {
                let seen = s.transaction().map(|t| t.findings);
                assert_eq!(seen, Some(next), "RCPT sees its own transaction's");
                s.answer_rcpt(Ok(()));
            }
            Action::Deliver(t) => {
                delivered.push(t.findings);
                s.answer_data(Ok(format!("Q{}", t.findings)));
            }
            _ => {}
        }
    }
    (String::from_utf8(out).unwrap(), delivered)
}

#[test]
fn what_mail_from_hands_over_arrives_with_its_own_message_only() {
    let (out, delivered) = numbered_senders(
        b"EHLO c.test\r\nMAIL FROM:<a@remote.test>\r\nRSET\r\n\
          MAIL FROM:<b@remote.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\nhi\r\n.\r\n",
    );
    assert_eq!(delivered, [2], "the abandoned transaction's value is gone");
    assert!(out.contains("250 2.0.0 Ok: queued as Q2\r\n"), "{out}");
}

#[test]
fn a_refused_sender_opens_no_transaction() {
    let mut s: Session<u32> = Session::new(config(Role::Mx), peer(), None);
    s.start();
    s.feed(b"EHLO c.test\r\nMAIL FROM:<a@remote.test>\r\n");
    while let Some(a) = s.poll() {
        if let Action::CheckMail { .. } = a {
            s.answer_mail(Err(Reply::new(550, Status(5, 7, 1), "no")));
        }
    }
    assert!(s.transaction().is_none());
}
