//! Each test is one behaviour of the config reader, named for it.

use super::*;
use std::io::Write;

fn parse_str(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("/etc/portcullis/test.toml"))
}

fn error_of(text: &str) -> (Location, String) {
    match parse_str(text) {
        Err(ConfigError::Invalid { at, message, .. }) => (at, message),
        other => panic!("expected an error, got {other:?}"),
    }
}

const DESIGN_EXAMPLE: &str = r#"
hostname = "mx.example.test"
data_dir = "/var/lib/portcullis"

[dns]
nameservers = ["127.0.0.1:5300"]

[[listener]]
role = "mx"
bind = ["0.0.0.0:25", "[::]:25"]

[[listener]]
role = "submission"
bind = ["[::]:587"]

[[listener]]
role = "submissions"
bind = ["[::]:465"]

[http]
bind = "127.0.0.1:8025"

[[domain]]
name = "example.test"

[state]
backend = "embedded"
redis_url = "redis://127.0.0.1:6379"

[class.default]
max_connections = 20
messages_per_minute = 60

[class.new]
max_connections = 10
messages_per_minute = 120
"#;

#[test]
fn accepts_the_design_example() {
    let c = parse_str(DESIGN_EXAMPLE).unwrap();
    assert_eq!(c.hostname, "mx.example.test");
    assert_eq!(c.listeners.len(), 3);
    assert_eq!(c.listeners[0].bind.len(), 2);
    assert_eq!(c.local_domains, vec!["example.test"]);
    assert_eq!(c.classes["default"].max_connections, Some(20));
    assert_eq!(c.dns_nameservers.len(), 1);
}

#[test]
fn empty_file_gives_the_embedded_default_listeners() {
    let c = parse_str("").unwrap();
    let ports: Vec<u16> = c.listeners.iter().map(|l| l.bind[0].port()).collect();
    assert_eq!(ports, vec![2525, 2587, 2465]);
    assert_eq!(c.local_domains, vec!["localhost"]);
}

#[test]
fn unknown_key_names_line_and_key() {
    let (at, msg) = error_of(
        "hostname = \"a.test\"\n\n[[listener]]\nrole = \"mx\"\nbind = [\"127.0.0.1:25\"]\nbacklog = 5\n",
    );
    assert_eq!(at.line, 6);
    assert_eq!(at.key, "listener.backlog");
    assert!(msg.contains("unknown field"), "{msg}");
}

#[test]
fn bad_bind_address_names_line_and_key() {
    let (at, msg) =
        error_of("[[listener]]\nrole = \"mx\"\nbind = [\"127.0.0.1:25\", \"nowhere:25\"]\n");
    assert_eq!(at.line, 3);
    assert_eq!(at.key, "listener.bind");
    assert!(msg.contains("address"), "{msg}");
}

#[test]
fn bad_address_in_multiline_array_names_the_key_above() {
    let (at, _) = error_of(
        "[[listener]]\nrole = \"mx\"\nbind = [\n  \"127.0.0.1:25\",\n  \"300.1.1.1:25\",\n]\n",
    );
    assert_eq!(at.line, 5);
    assert_eq!(at.key, "listener.bind");
}

#[test]
fn unknown_role_is_refused() {
    let (at, msg) = error_of("[[listener]]\nrole = \"relay\"\nbind = [\"127.0.0.1:25\"]\n");
    assert_eq!((at.line, at.key.as_str()), (2, "listener.role"));
    assert!(msg.contains("unknown variant"), "{msg}");
}

#[test]
fn missing_certificate_file_names_the_file_and_key() {
    let (at, msg) =
        error_of("[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n");
    assert_eq!((at.line, at.key.as_str()), (2, "tls.cert"));
    assert!(msg.contains("/nonexistent/cert.pem"), "{msg}");
}

#[test]
fn existing_certificate_files_are_accepted() {
    let dir = std::env::temp_dir().join(format!("pc-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["c.pem", "k.pem"] {
        std::fs::File::create(dir.join(f))
            .unwrap()
            .write_all(b"x")
            .unwrap();
    }
    let text = format!(
        "[tls]\ncert = \"{0}/c.pem\"\nkey = \"{0}/k.pem\"\n",
        dir.display()
    );
    assert!(parse_str(&text).unwrap().tls.is_some());
}

#[test]
fn invalid_domain_name_is_refused() {
    let (at, msg) = error_of("[[domain]]\nname = \"bad_domain..test\"\n");
    assert_eq!((at.line, at.key.as_str()), (2, "domain.name"));
    assert!(msg.contains("not a valid domain"), "{msg}");
}

#[test]
fn limits_below_rfc_minimums_are_refused() {
    let (at, msg) = error_of("[limits]\nmax_recipients = 10\n");
    assert_eq!(at.key, "limits");
    assert!(msg.contains("RFC 5321"), "{msg}");
}

#[test]
fn redis_backend_needs_a_url() {
    let (at, _) = error_of("[state]\nbackend = \"redis\"\n");
    assert_eq!(at.key, "state.backend");
}

#[test]
fn sentinel_url_names_sentinels_and_master() {
    let c = parse_str(
        "[state]\nbackend = \"redis\"\nredis_url = \"redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster\"\n",
    )
    .unwrap();
    let target = c.redis.map(|r| r.target);
    assert_eq!(
        target,
        Some(RedisTarget::Sentinel {
            sentinels: vec![
                "redis://10.0.0.1:26379".into(),
                "redis://10.0.0.2:26380".into()
            ],
            master: "mymaster".into(),
        })
    );
}

#[test]
fn cluster_nodes_select_cluster_mode() {
    let c = parse_str(
        "[state]\nbackend = \"redis\"\ncluster_nodes = [\"redis://127.0.0.1:7000\"]\nnode_timeout_secs = 3\n",
    )
    .unwrap();
    let r = c.redis.unwrap();
    assert_eq!(
        r.target,
        RedisTarget::Cluster(vec!["redis://127.0.0.1:7000".into()])
    );
    assert_eq!(r.node_timeout, std::time::Duration::from_secs(3));
}

#[test]
fn redis_url_and_cluster_nodes_are_exclusive() {
    let (at, msg) =
        error_of("[state]\nredis_url = \"redis://a\"\ncluster_nodes = [\"redis://b:7000\"]\n");
    assert_eq!(at.key, "state.redis_url");
    assert!(msg.contains("one of"), "{msg}");
}

#[test]
fn sentinels_need_a_master_name() {
    let (at, msg) = error_of("[state]\nsentinels = [\"redis://a:26379\"]\n");
    assert_eq!(at.key, "state.sentinels");
    assert!(msg.contains("sentinel_master"), "{msg}");
}

#[test]
fn display_names_file_line_and_key() {
    let e = parse_str("bogus = 1\n").unwrap_err().to_string();
    assert!(
        e.starts_with("/etc/portcullis/test.toml:1:1: key `bogus`:"),
        "{e}"
    );
}

#[test]
fn submission_log_must_be_kept_a_week() {
    let (at, msg) = error_of("[submission]\nlog_retention_days = 3\n");
    assert_eq!(at.key, "submission");
    assert!(msg.contains("at least 7"), "{msg}");
}

#[test]
fn submission_and_auth_tables_are_read() {
    let c = parse_str("[submission]\nrecipients_per_hour = 100\n[auth]\naddress_lock_after = 5\n")
        .unwrap();
    assert_eq!(c.submission.recipients_per_hour, 100);
    assert_eq!(c.submission.recipients_per_day, 2000);
    assert_eq!(c.auth.address_lock_after, 5);
}

#[test]
fn domain_policy_is_read_per_domain() {
    let c = parse_str(
        "[[domain]]\nname = \"a.test\"\npolicy = \"dmarc\"\n[[domain]]\nname = \"b.test\"\n",
    )
    .unwrap();
    assert_eq!(c.inbound_policy["a.test"], InboundPolicy::Dmarc);
    assert_eq!(c.inbound_policy["b.test"], InboundPolicy::Label);
    let (at, _) = error_of("[[domain]]\nname = \"a.test\"\npolicy = \"reject-all\"\n");
    assert_eq!(at.key, "domain.policy");
}

#[test]
fn trust_ad_needs_a_resolver_on_loopback() {
    let (at, msg) = error_of("[dns]\nnameservers = [\"192.0.2.53:53\"]\ntrust_ad = true\n");
    assert_eq!(at.line, 3);
    assert!(
        msg.contains("dns.trust_ad") && msg.contains("loopback"),
        "{msg}"
    );
    let ok = parse_str("[dns]\nnameservers = [\"127.0.0.1:53\"]\ntrust_ad = true\n").unwrap();
    assert!(ok.dns_trust_ad);
}

#[test]
fn a_domain_policy_for_mta_sts_lists_the_hostname_by_default() {
    let c = parse_str("hostname = \"mx.example.test\"\n[[domain]]\nname = \"example.test\"\nmta_sts = \"enforce\"\n").unwrap();
    let p = &c.mta_sts["example.test"];
    assert_eq!(p.mx, ["mx.example.test"]);
    assert_eq!(p.max_age, 604_800);
}

#[test]
fn a_missing_file_is_named_with_its_reason_once() {
    let e = load(Path::new("/nonexistent/portcullis.toml")).unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("/nonexistent/portcullis.toml: cannot read: "),
        "{text}"
    );
    // The reason is in the message; a chain printer (anyhow's `{:#}`)
    // finds no source to print it a second time.
    assert!(std::error::Error::source(&e).is_none());
}

#[test]
fn autoconfig_names_the_mailbox_servers_with_their_tls_mode() {
    let c = parse_str(
        "[autoconfig]\nimap = \"imap.example.test:993\"\npop3 = \"pop.example.test:110\"\npop3_tls = \"starttls\"\n",
    )
    .unwrap();
    let imap = c.autoconfig.imap.unwrap();
    assert_eq!(
        (imap.host.as_str(), imap.port, imap.tls),
        ("imap.example.test", 993, TlsMode::Tls)
    );
    let pop3 = c.autoconfig.pop3.unwrap();
    assert_eq!((pop3.port, pop3.tls), (110, TlsMode::Starttls));
    // Without [autoconfig], no mailbox server is advertised.
    assert_eq!(parse_str("").unwrap().autoconfig, Autoconfig::default());
}

#[test]
fn autoconfig_errors_name_line_and_key() {
    let (at, msg) = error_of("hostname = \"a.test\"\n[autoconfig]\nimap = \"imap.example.test\"\n");
    assert_eq!((at.line, at.key.as_str()), (3, "autoconfig.imap"));
    assert!(msg.contains("host:port"), "{msg}");
    let (at, _) = error_of("[autoconfig]\nimap = \"bad_name!:993\"\n");
    assert_eq!((at.line, at.key.as_str()), (2, "autoconfig.imap"));
    let (at, msg) =
        error_of("[autoconfig]\nimap = \"imap.example.test:143\"\nimap_tls = \"ssl\"\n");
    assert_eq!((at.line, at.key.as_str()), (3, "autoconfig.imap_tls"));
    assert!(msg.contains("unknown variant"), "{msg}");
    let (at, msg) = error_of("[autoconfig]\nsmtp = \"x.test:587\"\n");
    assert_eq!((at.line, at.key.as_str()), (2, "autoconfig.smtp"));
    assert!(msg.contains("unknown field"), "{msg}");
}

#[test]
fn dmarc_report_mailbox_must_be_an_address() {
    let (at, msg) =
        error_of("hostname = \"mx.example.test\"\n[dmarc]\nreport_mailbox = \"reports\"\n");
    assert_eq!(at.line, 2, "{msg}");
    assert!(msg.contains("report_mailbox"), "{msg}");
}

#[test]
fn dmarc_reports_are_sent_by_default_with_a_daily_cap() {
    let c =
        parse_str("hostname = \"mx.example.test\"\n[dmarc]\nreport_exclude = [\"Spam.Example\"]\n")
            .unwrap();
    assert!(c.dmarc.send_reports);
    assert_eq!(c.dmarc.report_daily_cap, 100);
    assert_eq!(c.dmarc.report_exclude, ["spam.example"]);
}

const ACME_BASE: &str = "hostname = \"mx.example.test\"\n[http]\nbind = \"127.0.0.1:8025\"\nmta_sts_bind = \"127.0.0.1:8443\"\n[[domain]]\nname = \"example.test\"\nmta_sts = \"enforce\"\n";

#[test]
fn acme_defaults_to_the_hostname_and_the_mta_sts_names() {
    let text = format!(
        "{ACME_BASE}[acme]\ndirectory = \"https://ca.test/dir\"\ncontact = [\"mailto:hostmaster@Example.test\"]\n"
    );
    let a = parse_str(&text).unwrap().acme.unwrap();
    assert_eq!(a.domains, ["mx.example.test", "mta-sts.example.test"]);
    assert_eq!(a.contact, ["mailto:hostmaster@example.test"]);
    assert_eq!((a.retry_secs, a.retry_max_secs), (300, 21_600));
}

#[test]
fn bad_acme_values_name_line_and_key() {
    let cases: [(&str, usize, &str, &str); 7] = [
        (
            "directory = \"http://ca.test/dir\"\n",
            9,
            "acme.directory",
            "https://",
        ),
        (
            "directory = \"https://ca.test/\"\ncontact = [\"hostmaster@example.test\"]\n",
            10,
            "acme.contact",
            "mailto:",
        ),
        (
            "directory = \"https://ca.test/\"\nchallenge = \"http-01\"\n",
            10,
            "acme.challenge",
            "tls-alpn-01",
        ),
        (
            "directory = \"https://ca.test/\"\ndomains = [\"*.example.test\"]\n",
            10,
            "acme.domains",
            "wildcard",
        ),
        (
            "directory = \"https://ca.test/\"\ndomains = [\"bad name\"]\n",
            10,
            "acme.domains",
            "not a valid domain",
        ),
        (
            "directory = \"https://ca.test/\"\ndirectory_ca = \"/nonexistent/ca.pem\"\n",
            10,
            "acme.directory_ca",
            "/nonexistent/ca.pem",
        ),
        (
            "directory = \"https://ca.test/\"\nretry_secs = 60\nretry_max_secs = 10\n",
            11,
            "acme.retry_max_secs",
            "at least retry_secs",
        ),
    ];
    for (acme, line, key, words) in cases {
        let (at, msg) = error_of(&format!("{ACME_BASE}[acme]\n{acme}"));
        assert_eq!((at.line, at.key.as_str()), (line, key), "{acme}: {msg}");
        assert!(msg.contains(words), "{acme}: {msg}");
    }
}

#[test]
fn acme_without_the_https_listener_is_refused() {
    let (at, msg) = error_of("[acme]\ndirectory = \"https://ca.test/dir\"\n");
    assert_eq!((at.line, at.key.as_str()), (2, "acme.directory"));
    assert!(msg.contains("mta_sts_bind"), "{msg}");
}

#[test]
fn acme_and_tls_files_together_are_refused() {
    let dir = std::env::temp_dir().join(format!("portcullis-acme-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("c.pem");
    std::fs::write(&cert, "x").unwrap();
    let text = format!(
        "{ACME_BASE}[tls]\ncert = \"{0}\"\nkey = \"{0}\"\n[acme]\ndirectory = \"https://ca.test/dir\"\n",
        cert.display()
    );
    let (at, msg) = error_of(&text);
    assert_eq!((at.line, at.key.as_str()), (9, "tls.cert"));
    assert!(msg.contains("remove one"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn escalation_is_on_by_default_within_a_48_and_a_24() {
    let c = parse_str("").unwrap();
    let a = &c.admission;
    assert_eq!(a.escalate_after, 16);
    assert_eq!((a.escalate_ipv6_ceiling, a.escalate_ipv4_ceiling), (48, 24));
    assert!(a.escalate_block_secs > 0, "an escalated block lifts itself");
    let (_, msg) = error_of("[admission]\nescalate_block_secs = 0\n");
    assert!(msg.contains("escalate_block_secs"), "{msg}");
    let off = parse_str("[admission]\nescalate_after = 0\nescalate_block_secs = 0\n").unwrap();
    assert_eq!(off.admission.escalate_after, 0, "0 turns it off");
}

#[test]
fn kernel_blocklist_is_auto_unless_set_true_or_false() {
    let mode = |text: &str| parse_str(text).unwrap().admission.kernel_blocklist;
    assert_eq!(mode(""), KernelBlocklistMode::Auto);
    assert_eq!(
        mode("[admission]\nkernel_blocklist = \"auto\"\n"),
        KernelBlocklistMode::Auto
    );
    assert_eq!(
        mode("[admission]\nkernel_blocklist = true\n"),
        KernelBlocklistMode::On
    );
    assert_eq!(
        mode("[admission]\nkernel_blocklist = false\n"),
        KernelBlocklistMode::Off
    );
    for bad in ["\"yes\"", "1"] {
        let (at, msg) = error_of(&format!(
            "[admission]\nblock_secs = 60\nkernel_blocklist = {bad}\n"
        ));
        assert_eq!(
            (at.line, at.key.as_str()),
            (3, "admission.kernel_blocklist"),
            "{msg}"
        );
        assert!(msg.contains(r#"true, false or "auto""#), "{msg}");
    }
}

#[test]
fn milters_keep_their_order_and_defaults() {
    let c = parse_str(
        "[[milter]]\nsocket = \"unix:/run/clamav/milter.sock\"\n\n[[milter]]\nname = \"dkim\"\nsocket = \"inet:[::1]:8891\"\nroles = [\"submission\"]\ntimeout_ms = 500\non_failure = \"accept\"\nskip = [\"body\"]\nmacros = { \"{x}\" = \"y\" }\n",
    )
    .unwrap();
    let [first, second] = &c.milters[..] else {
        panic!("two milters");
    };
    assert_eq!(first.name, "unix:/run/clamav/milter.sock");
    assert_eq!(first.roles.len(), 3);
    assert_eq!(first.on_failure, MilterFailure::Tempfail);
    assert_eq!(first.timeout_ms, Milter::DEFAULT_TIMEOUT_MS);
    assert_eq!(second.socket.to_string(), "inet:[::1]:8891");
    assert_eq!(second.roles, [ListenerRole::Submission]);
    assert_eq!(second.skip, [MilterStep::Body]);
    assert_eq!(second.macros, [("{x}".to_owned(), "y".to_owned())]);
}

#[test]
fn a_milter_socket_that_is_neither_unix_nor_inet_names_line_and_key() {
    let (at, msg) = error_of("[[milter]]\nsocket = \"local:/x\"\n");
    assert_eq!((at.line, at.key.as_str()), (2, "milter.socket"));
    assert!(msg.contains("unix:/path or inet:host:port"), "{msg}");
    let (at, _) = error_of("[[milter]]\nsocket = \"unix:relative\"\n");
    assert_eq!(at.line, 2);
    let (at, _) = error_of("[[milter]]\nsocket = \"inet:host\"\n");
    assert_eq!(at.line, 2);
}

#[test]
fn a_milter_for_the_policy_role_or_with_no_wait_is_refused() {
    let (at, msg) = error_of("[[milter]]\nsocket = \"inet:h:1\"\nroles = [\"policy\"]\n");
    assert_eq!((at.line, at.key.as_str()), (3, "milter.roles"));
    assert!(msg.contains("SMTP listener roles"), "{msg}");
    let (at, _) = error_of("[[milter]]\nsocket = \"inet:h:1\"\ntimeout_ms = 0\n");
    assert_eq!((at.line, at.key.as_str()), (3, "milter.timeout_ms"));
}
