//! The session state machine fed arbitrary byte streams in arbitrary
//! pieces, driven as the server drives it: TLS restarts when asked
//! (STARTTLS), AUTH answered, senders and recipients accepted, DATA and
//! BDAT messages queued. Every reply must be a well-formed 2xx-5xx.
#![no_main]
use portcullis_smtp::{
    Action, Limits, Peer, Reply, Role, Session, SessionConfig, Status, TlsInfo,
};
use std::sync::Arc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&knobs, input)) = data.split_first() else { return };
    let role = match knobs % 3 {
        0 => Role::Mx,
        1 => Role::Submission,
        _ => Role::Submissions,
    };
    let cfg = Arc::new(SessionConfig {
        hostname: "mx.fuzz.test".into(),
        role,
        limits: Limits { max_message_size: 4096, ..Limits::default() },
        tls_available: true,
    });
    let peer = Peer { addr: "192.0.2.1:4000".parse().unwrap(), ptr: None };
    let tls = (role == Role::Submissions).then(|| TlsInfo { version: "TLSv1.3".into(), cipher: "x".into() });
    let mut s: Session = Session::new(cfg, peer, tls);
    s.start();
    let step = usize::from(knobs >> 2).max(1);
    let mut out = Vec::new();
    for chunk in input.chunks(step) {
        s.feed(chunk);
        while let Some(a) = s.poll() {
            match a {
                Action::Reply(r) => {
                    assert!((200..600).contains(&r.code), "{r:?}");
                    r.write_to(&mut out);
                }
                Action::StartTls => s.tls_established(TlsInfo { version: "TLSv1.3".into(), cipher: "x".into() }),
                Action::Authenticate(c) => s.answer_auth(if c.password.len() % 2 == 0 {
                    Ok(c.username)
                } else {
                    Err(Reply::new(535, Status(5, 7, 8), "no"))
                }),
                Action::CheckMail { .. } => s.answer_mail(Ok(())),
                Action::CheckRcpt { .. } => s.answer_rcpt(Ok(())),
                Action::Deliver(_) => s.answer_data(Ok("queued".into())),
                Action::Close => return,
            }
        }
    }
});
