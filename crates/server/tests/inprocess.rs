//! The real server, started in this process on port 0: the SMTP
//! protocol's edges, limits, the admin API and reloads, each in a few
//! milliseconds. What needs a real peer (swaks, Postfix, NSD, dkimpy,
//! Redis, rspamd, ...) stays in `tests/e2e`.

mod harness;

use harness::{Smtp, TOKEN, delivered, http, start, wait_until};
use portcullis_config::ListenerRole::{Mx, Submission};
use std::time::Duration;

const MESSAGE: &str = "From: <a@remote.test>\r\nSubject: hello\r\n\r\nhello";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_the_postmaster_lands_in_its_maildir() {
    let s = start(|_| {}).await;
    let (mut c, greeting) = Smtp::connect(s.smtp(Mx)).await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    let r = c
        .mail("a@remote.test", &["postmaster@localhost"], MESSAGE)
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let inbox = s.mailbox("localhost", "postmaster");
    wait_until("the message in postmaster's Maildir", || {
        delivered(&inbox).len() == 1
    })
    .await;
    let text = std::fs::read_to_string(&delivered(&inbox)[0]).unwrap();
    assert!(
        text.contains("Authentication-Results: mx.inprocess.test"),
        "{text}"
    );
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_never_relays() {
    let s = start(|_| {}).await;
    let (mut c, _) = Smtp::connect(s.smtp(Mx)).await;
    c.cmd("EHLO client.test").await;
    c.cmd("MAIL FROM:<a@remote.test>").await;
    let r = c.cmd("RCPT TO:<someone@elsewhere.test>").await;
    assert_eq!(r.code, 554, "{r:?}");
    assert!(r.text.contains("5.7.1"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_wants_starttls_before_mail() {
    let s = start(|_| {}).await;
    let (mut c, _) = Smtp::connect(s.smtp(Submission)).await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(!ehlo.text.contains("AUTH"), "no AUTH before TLS: {ehlo:?}");
    let r = c.cmd("MAIL FROM:<postmaster@localhost>").await;
    assert_eq!(r.code, 530, "{r:?}");
    assert!(r.text.contains("5.7.0"), "{r:?}");
}

/// Terminators an SMTP smuggling attack hides a second transaction
/// behind: none of them ends the data.
const SMUGGLING: [&str; 5] = ["\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r\n", "\r\n.\r"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_terminators_are_refused_and_nothing_is_queued() {
    let s = start(|_| {}).await;
    for terminator in SMUGGLING {
        for pipelined in [false, true] {
            let (mut c, _) = Smtp::connect(s.smtp(Mx)).await;
            c.cmd("EHLO attacker.test").await;
            c.cmd("MAIL FROM:<a@remote.test>").await;
            c.cmd("RCPT TO:<postmaster@localhost>").await;
            assert_eq!(c.cmd("DATA").await.code, 354);
            let smuggled = "MAIL FROM:<admin@localhost>\r\nRCPT TO:<postmaster@localhost>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n";
            let extra = if pipelined { smuggled } else { "" };
            c.send(&format!(
                "Subject: first\r\n\r\nhello{terminator}{extra}\r\n.\r\n"
            ))
            .await;
            let r = c.reply().await;
            assert!(
                r.code == 554 && r.text.contains("5.6.0"),
                "{terminator:?}: {r:?}"
            );
        }
    }
    let (_, body) = http(s.http(), "GET", "/metrics", None).await;
    assert!(body.contains("portcullis_queue_messages 0"), "{body}");
    assert!(delivered(&s.mailbox("localhost", "postmaster")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_command_line_is_refused_and_the_session_goes_on() {
    let s = start(|_| {}).await;
    let (mut c, _) = Smtp::connect(s.smtp(Mx)).await;
    c.cmd("EHLO client.test").await;
    let r = c.cmd(&format!("NOOP {}", "x".repeat(600))).await;
    assert!(r.code == 500 && r.text.contains("5.5.2"), "{r:?}");
    assert_eq!(c.cmd("NOOP").await.code, 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_message_is_refused_at_mail_and_in_data() {
    let s = start(|c| c.limits.max_message_size = 2000).await;
    let (mut c, _) = Smtp::connect(s.smtp(Mx)).await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.text.contains("SIZE 2000"), "{ehlo:?}");
    let r = c.cmd("MAIL FROM:<a@remote.test> SIZE=5000").await;
    assert!(r.code == 552 && r.text.contains("5.3.4"), "{r:?}");
    c.cmd("MAIL FROM:<a@remote.test>").await;
    c.cmd("RCPT TO:<postmaster@localhost>").await;
    c.cmd("DATA").await;
    let line = "x".repeat(900);
    c.send(&format!("{line}\r\n{line}\r\n{line}\r\n.\r\n"))
        .await;
    let r = c.reply().await;
    assert!(r.code == 552 && r.text.contains("5.3.4"), "{r:?}");
    assert_eq!(c.cmd("NOOP").await.code, 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_told_421_and_closed() {
    let s = start(|c| c.limits.command_timeout_secs = 1).await;
    let (mut c, _) = Smtp::connect(s.smtp(Mx)).await;
    let r = c.reply().await;
    assert!(r.code == 421 && r.text.contains("4.4.2"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_talking_before_the_greeting_is_refused() {
    let s = start(|c| {
        for l in &mut c.listeners {
            l.pregreet_wait = Duration::from_millis(500);
        }
    })
    .await;
    let stream = tokio::net::TcpStream::connect(s.smtp(Mx)).await.unwrap();
    let (r, mut w) = tokio::io::split(stream);
    tokio::io::AsyncWriteExt::write_all(&mut w, b"EHLO hasty.test\r\n")
        .await
        .unwrap();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(r);
    tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut line)
        .await
        .unwrap();
    assert!(
        line.starts_with("554") && line.contains("before the greeting"),
        "{line}"
    );
    let (_, polite) = Smtp::connect(s.smtp(Mx)).await;
    assert_eq!(polite.code, 220);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_and_invalid_utf8_get_replies() {
    let s = start(|_| {}).await;
    let (mut c, _) = Smtp::connect(s.smtp(Mx)).await;
    c.cmd("EHLO client.test").await;
    assert!(c.cmd("MAIL FROM:<a\0b@sender.test>").await.code >= 500);
    c.send_bytes(b"MAIL FROM:<\xff\xfe@sender.test>\r\n").await;
    let r = c.reply().await;
    assert!(r.code >= 500, "{r:?}");
    c.send("Subject: nul\r\n").await;
    let r = c.reply().await;
    assert!(r.code >= 500, "a line that is no command: {r:?}");
    assert_eq!(c.cmd("RSET").await.code, 250, "the session carries on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_every_request_without_the_token() {
    let s = start(|_| {}).await;
    let (code, spec) = http(s.http(), "GET", "/api/openapi.json", None).await;
    assert_eq!(code, 200);
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let mut checked = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if op.get("security") == Some(&serde_json::json!([])) {
                continue;
            }
            let concrete = path
                .replace("{id}", "X")
                .replace("{identity}", "a.test")
                .replace("{address}", "a@b.test");
            for token in [None, Some("wrong-token")] {
                let (code, body) = http(s.http(), &method.to_uppercase(), &concrete, token).await;
                assert_eq!(code, 401, "{method} {path}: {body}");
                assert!(body.contains("token"), "{body}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 19, "{checked} operations");
    let (code, _) = http(s.http(), "GET", "/api/stats", Some(TOKEN)).await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_report_job_answers_what_it_sent() {
    let s = start(|c| c.delivery.tls_rpt_interval_secs = 86_400).await;
    let mut client = portcullis_control::Client::connect(&s.data).expect("the control socket");
    let answer = tokio::task::spawn_blocking(move || {
        client.request(&portcullis_control::Request::Run {
            job: portcullis_control::Job::TlsReports,
        })
    })
    .await
    .unwrap()
    .expect("the job runs");
    assert_eq!(answer["sent"], serde_json::json!([]), "{answer}");
    assert!(s.data.join("tlsrpt/period.json").exists());
}

mod reload {
    use super::*;
    use harness::{TempDir, dns_nxdomain};
    use portcullis_server::Server;
    use std::path::Path;

    fn write_config(path: &Path, data: &Path, dns: std::net::SocketAddr, size: &str) {
        let text = format!(
            "hostname = \"mx.inprocess.test\"\ndata_dir = \"{}\"\n\n[dns]\nnameservers = [\"{dns}\"]\n\n\
             [[listener]]\nrole = \"mx\"\nbind = [\"127.0.0.1:0\"]\n\n[[domain]]\nname = \"localhost\"\n\n\
             [limits]\nmax_message_size = {size}\n",
            data.display()
        );
        std::fs::write(path, text).unwrap();
    }

    async fn size_advertised(s: &Server) -> String {
        let (mut c, _) =
            Smtp::connect(s.address(portcullis_server::Bound::Smtp(Mx)).unwrap()).await;
        let ehlo = c.cmd("EHLO client.test").await;
        ehlo.text
            .lines()
            .find_map(|l| l.split_once("SIZE ").map(|(_, n)| n.trim().to_owned()))
            .unwrap_or_default()
    }

    /// A server started from a config file that a test rewrites.
    struct FromFile {
        server: Server,
        path: std::path::PathBuf,
        data: std::path::PathBuf,
        dns: std::net::SocketAddr,
        _dir: TempDir,
    }

    impl FromFile {
        async fn start(size: &str) -> FromFile {
            let dir = TempDir::new();
            let (path, data) = (dir.0.join("p.toml"), dir.0.join("data"));
            let dns = dns_nxdomain().await;
            write_config(&path, &data, dns, size);
            let config = portcullis_config::load(&path).unwrap();
            let server = Server::start(config, Some(path.clone())).await.unwrap();
            FromFile {
                server,
                path,
                data,
                dns,
                _dir: dir,
            }
        }

        fn reload_with(&self, size: &str) {
            write_config(&self.path, &self.data, self.dns, size);
            self.server.reload();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_changes_a_limit_for_new_sessions_and_keeps_old_ones() {
        let f = FromFile::start("1000000").await;
        let mx = f
            .server
            .address(portcullis_server::Bound::Smtp(Mx))
            .unwrap();
        let (mut held, _) = Smtp::connect(mx).await;
        held.cmd("EHLO client.test").await;
        f.reload_with("2000000");
        assert_eq!(size_advertised(&f.server).await, "2000000");
        let r = held
            .mail("a@remote.test", &["postmaster@localhost"], MESSAGE)
            .await;
        assert_eq!(r.code, 250, "the session from before the reload: {r:?}");
        f.server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_config_on_reload_keeps_the_running_one() {
        let f = FromFile::start("1000000").await;
        f.reload_with("\"big\"");
        assert_eq!(size_advertised(&f.server).await, "1000000");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_client_is_refused_by_the_accept_loop_every_time() {
    let s = start(|_| {}).await;
    let mut client = portcullis_control::Client::connect(&s.data).expect("the control socket");
    let block = portcullis_control::Request::StateApply {
        command: portcullis_admission::StateCommand::Block {
            range: "127.0.0.0/8".parse().unwrap(),
            secs: 600,
            reason: "in-process test".into(),
        },
    };
    tokio::task::spawn_blocking(move || client.request(&block))
        .await
        .unwrap()
        .expect("blocked");
    // A burst at once: the accept loop takes them in batches, and each
    // gets the reply, never a greeting.
    let clients: Vec<_> = (0..100)
        .map(|_| tokio::spawn(Smtp::connect(s.smtp(Mx))))
        .collect();
    for c in clients {
        let (_, first) = c.await.unwrap();
        assert_eq!(first.code, 421, "{first:?}");
        assert!(first.text.contains("in-process test"), "{first:?}");
    }
    let (_, metrics) = http(s.http(), "GET", "/metrics", None).await;
    let refused = metrics
        .lines()
        .find(|l| l.contains("outcome=\"refused_blocklist\""))
        .unwrap_or_default()
        .to_owned();
    assert!(refused.ends_with(" 100"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_past_max_sessions_is_told_421_and_counted() {
    let s = start(|c| c.limits.max_sessions = 1).await;
    let (_held, greeting) = Smtp::connect(s.smtp(Mx)).await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    for _ in 0..3 {
        let (_, first) = Smtp::connect(s.smtp(Mx)).await;
        assert_eq!(first.code, 421, "{first:?}");
        assert!(
            first.text.contains("4.7.0 Too many connections"),
            "{first:?}"
        );
    }
    let (_, metrics) = http(s.http(), "GET", "/metrics", None).await;
    let refused = metrics
        .lines()
        .find(|l| l.contains("outcome=\"refused_max_sessions\""))
        .unwrap_or_default()
        .to_owned();
    assert!(refused.ends_with(" 3"), "{refused}");
}
