//! The stage hooks against scripted milters on Unix sockets: what each
//! answer means for the session, the order milters see a message in, and
//! every wait bounded by the timeout.

use portcullis_config::{ListenerRole, Milter, MilterFailure, MilterSocket};
use portcullis_metrics::Metrics;
use portcullis_milter::{Client, Mail, Milters, Session};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// A packet as a milter writes it.
fn packet(code: u8, data: &[u8]) -> Vec<u8> {
    let mut p = u32::try_from(data.len() + 1)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    p.push(code);
    p.extend_from_slice(data);
    p
}

fn optneg(actions: u32, protocol: u32) -> Vec<u8> {
    let mut d = 6u32.to_be_bytes().to_vec();
    d.extend_from_slice(&actions.to_be_bytes());
    d.extend_from_slice(&protocol.to_be_bytes());
    packet(b'O', &d)
}

/// What a scripted milter answers to one command (code, data); an empty
/// packet is a pause of [`PAUSE`] before the next.
type Script = fn(u8, &[u8]) -> Vec<Vec<u8>>;

/// Answers continue to everything it must answer, and accepts at the end.
fn continues(cmd: u8, _: &[u8]) -> Vec<Vec<u8>> {
    match cmd {
        b'O' => vec![optneg(0x1ff, 0)],
        b'D' | b'A' | b'Q' => vec![],
        b'E' => vec![packet(b'a', b"")],
        _ => vec![packet(b'c', b"")],
    }
}

const PAUSE: Duration = Duration::from_millis(150);

struct Peer {
    dir: PathBuf,
    socket: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A milter on a Unix socket running `script` on every connection; it
/// records each command's code in `seen`.
fn spawn_milter(script: Script, seen: Arc<std::sync::Mutex<Vec<u8>>>) -> Peer {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-milter-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("milter.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                loop {
                    let mut len = [0u8; 4];
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut p = vec![0u8; u32::from_be_bytes(len) as usize];
                    if s.read_exact(&mut p).await.is_err() {
                        return;
                    }
                    seen.lock().unwrap().push(p[0]);
                    for answer in script(p[0], &p[1..]) {
                        if answer.is_empty() {
                            tokio::time::sleep(PAUSE).await;
                        } else if s.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    Peer { dir, socket }
}

fn milter(name: &str, socket: PathBuf, timeout_ms: u64) -> Milter {
    Milter {
        name: name.to_owned(),
        socket: MilterSocket::Unix(socket),
        roles: vec![ListenerRole::Mx],
        timeout_ms,
        on_failure: MilterFailure::Tempfail,
        skip: vec![],
        macros: vec![],
        max_connections: 4,
    }
}

fn session(milters: &[Milter]) -> Session {
    let client = Client {
        hostname: "mx.test".into(),
        daemon_name: "mx".into(),
        addr: "192.0.2.1:4000".parse().unwrap(),
        name: None,
    };
    Milters::new(milters, Arc::new(Metrics::default())).session(ListenerRole::Mx, client)
}

fn mail() -> Mail<'static> {
    Mail {
        helo: "client.test",
        sender: Some("a@b.test".into()),
        ..Mail::default()
    }
}

const MESSAGE: &[u8] = b"Subject: hi\r\n\r\nbody\r\n";

#[tokio::test]
async fn a_milter_that_never_answers_tempfails_within_its_timeout() {
    let dir = std::env::temp_dir().join(format!("portcullis-silent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let _ = std::fs::remove_file(&path);
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut s = session(&[milter("silent", path, 200)]);
    let t0 = Instant::now();
    let refused = s.mail(&mail()).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(
        (refused.code, refused.status.unwrap().to_string()),
        (451, "4.7.1".into())
    );
    // The rest of the session gets the same answer at once.
    let t1 = Instant::now();
    assert_eq!(s.rcpt("c@d.test").await.unwrap_err().code, 451);
    assert!(t1.elapsed() < Duration::from_millis(100));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_milter_that_is_down_costs_a_quick_tempfail_or_nothing_when_skipped() {
    let gone = std::env::temp_dir().join("portcullis-no-such-milter.sock");
    let mut s = session(&[milter("down", gone.clone(), 5000)]);
    assert_eq!(s.mail(&mail()).await.unwrap_err().code, 451);
    let skipped = Milter {
        on_failure: MilterFailure::Accept,
        ..milter("down", gone, 5000)
    };
    let mut s = session(&[skipped]);
    assert!(s.mail(&mail()).await.is_ok());
    let out = s.message("ID1", MESSAGE).await.unwrap();
    assert!(out.data.is_none() && !out.discard);
}

#[tokio::test]
async fn a_refusal_at_connect_answers_every_mail_of_the_session() {
    fn refuses_connect(cmd: u8, d: &[u8]) -> Vec<Vec<u8>> {
        match cmd {
            b'C' => vec![packet(b'y', b"550 5.7.1 go away\0")],
            _ => continues(cmd, d),
        }
    }
    let seen = Arc::default();
    let peer = spawn_milter(refuses_connect, seen);
    let mut s = session(&[milter("m", peer.socket.clone(), 2000)]);
    for _ in 0..2 {
        let r = s.mail(&mail()).await.unwrap_err();
        assert_eq!((r.code, r.lines.clone()), (550, vec!["go away".to_owned()]));
    }
}

#[tokio::test]
async fn a_second_milter_sees_the_message_as_the_first_left_it() {
    fn adds(cmd: u8, d: &[u8]) -> Vec<Vec<u8>> {
        match cmd {
            b'E' => vec![packet(b'h', b"X-First\0yes\0"), packet(b'c', b"")],
            _ => continues(cmd, d),
        }
    }
    fn checks(cmd: u8, d: &[u8]) -> Vec<Vec<u8>> {
        match cmd {
            // The second refuses unless it saw the first one's field.
            b'L' if d.starts_with(b"X-First\0") => vec![packet(b'a', b"")],
            b'E' => vec![packet(b'r', b"")],
            _ => continues(cmd, d),
        }
    }
    let (first, second) = (
        spawn_milter(adds, Arc::default()),
        spawn_milter(checks, Arc::default()),
    );
    let mut s = session(&[
        milter("first", first.socket.clone(), 2000),
        milter("second", second.socket.clone(), 2000),
    ]);
    s.mail(&mail()).await.unwrap();
    s.rcpt("c@d.test").await.unwrap();
    let out = s.message("ID1", MESSAGE).await.unwrap();
    assert_eq!(
        out.data.unwrap(),
        b"Subject: hi\r\nX-First: yes\r\n\r\nbody\r\n"
    );
}

#[tokio::test]
async fn accept_ends_the_message_for_that_milter_and_the_next_message_aborts_first() {
    fn accepts_mail(cmd: u8, d: &[u8]) -> Vec<Vec<u8>> {
        match cmd {
            b'M' => vec![packet(b'a', b"")],
            _ => continues(cmd, d),
        }
    }
    let seen: Arc<std::sync::Mutex<Vec<u8>>> = Arc::default();
    let peer = spawn_milter(accepts_mail, seen.clone());
    let mut s = session(&[milter("m", peer.socket.clone(), 2000)]);
    for _ in 0..2 {
        s.mail(&mail()).await.unwrap();
        s.rcpt("c@d.test").await.unwrap();
        s.message("ID", MESSAGE).await.unwrap();
    }
    let codes: Vec<u8> = seen
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|c| *c != b'D')
        .collect();
    // One negotiation and connect for both messages; nothing after MAIL
    // until the next message, which begins with an abort.
    assert_eq!(codes, b"OCHMAM");
}

#[tokio::test]
async fn progress_keeps_the_wait_alive_and_modifications_wait_for_the_end() {
    fn slow(cmd: u8, d: &[u8]) -> Vec<Vec<u8>> {
        match cmd {
            b'E' => {
                // Each progress comes before the 300 ms timeout; the
                // whole answer after it.
                let mut v = vec![];
                for _ in 0..4 {
                    v.push(vec![]);
                    v.push(packet(b'p', b""));
                }
                v.push(packet(b'q', b"suspicious\0"));
                v.push(packet(b'b', b"new body\n"));
                v.push(packet(b'a', b""));
                v
            }
            _ => continues(cmd, d),
        }
    }
    let peer = spawn_milter(slow, Arc::default());
    let mut s = session(&[milter("slow", peer.socket.clone(), 300)]);
    let t0 = Instant::now();
    s.mail(&mail()).await.unwrap();
    let out = s.message("ID1", MESSAGE).await.unwrap();
    assert!(
        t0.elapsed() > Duration::from_millis(600),
        "four pauses in all"
    );
    assert_eq!(out.quarantine.as_deref(), Some("slow: suspicious"));
    assert_eq!(out.data.unwrap(), b"Subject: hi\r\n\r\nnew body\r\n");
}

#[tokio::test]
async fn discard_at_rcpt_drops_the_message_without_asking_more() {
    fn discards(cmd: u8, d: &[u8]) -> Vec<Vec<u8>> {
        match cmd {
            b'R' => vec![packet(b'd', b"")],
            _ => continues(cmd, d),
        }
    }
    let seen: Arc<std::sync::Mutex<Vec<u8>>> = Arc::default();
    let peer = spawn_milter(discards, seen.clone());
    let mut s = session(&[milter("m", peer.socket.clone(), 2000)]);
    s.mail(&mail()).await.unwrap();
    s.rcpt("c@d.test").await.unwrap();
    let out = s.message("ID1", MESSAGE).await.unwrap();
    assert!(out.discard);
    assert!(!seen.lock().unwrap().contains(&b'E'));
}
