//! The answers mail clients read: well-formed, with the elements each
//! client requires, and only for our own domains.

use super::*;
use portcullis_config::Autoconfig;

fn config(imap_tls: TlsMode) -> Config {
    let mut c = Config::embedded_default("/tmp/x".into(), "mx.example.test".into());
    c.local_domains = vec!["example.test".into()];
    c.autoconfig = Autoconfig {
        imap: Some(MailboxServer {
            host: "imap.example.test".into(),
            port: 993,
            tls: imap_tls,
        }),
        pop3: None,
    };
    c
}

/// An element of a parsed document: enough XML (no entities beyond the
/// five, no CDATA, no comments) for the documents we write, and strict
/// about nesting, so a document that passes is well-formed.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Element> {
        let name = name.to_owned();
        self.children.iter().filter(move |c| c.name == name)
    }

    fn child(&self, name: &str) -> &Element {
        self.all(name)
            .next()
            .unwrap_or_else(|| panic!("no <{name}> in <{}>", self.name))
    }

    fn text_of(&self, name: &str) -> &str {
        self.child(name).text.trim()
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn parse(doc: &str) -> Element {
    let body = doc.trim_start();
    let body = match body.strip_prefix("<?xml") {
        Some(rest) => &rest[rest.find("?>").expect("unclosed declaration") + 2..],
        None => body,
    };
    let mut stack = vec![Element::default()];
    let mut rest = body;
    while let Some(open) = rest.find('<') {
        stack.last_mut().unwrap().text.push_str(&rest[..open]);
        let close = rest[open..].find('>').expect("unclosed tag") + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let done = stack.pop().unwrap();
            assert_eq!(done.name, name.trim(), "mismatched end tag");
            stack
                .last_mut()
                .expect("end tag without start")
                .children
                .push(done);
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let mut parts = tag.splitn(2, char::is_whitespace);
        let mut e = Element {
            name: parts.next().unwrap().to_owned(),
            ..Element::default()
        };
        let mut attrs = parts.next().unwrap_or("").trim();
        while let Some((k, v)) = attrs.split_once("=\"") {
            let end = v.find('"').expect("unclosed attribute");
            e.attrs.push((k.trim().to_owned(), v[..end].to_owned()));
            attrs = v[end + 1..].trim();
        }
        if self_closing {
            stack.last_mut().unwrap().children.push(e);
        } else {
            stack.push(e);
        }
    }
    assert!(rest.trim().is_empty(), "text after the root");
    assert_eq!(stack.len(), 1, "unclosed elements");
    let mut doc = stack.pop().unwrap();
    assert_eq!(doc.children.len(), 1, "one root element");
    doc.children.pop().unwrap()
}

#[test]
fn thunderbird_file_has_incoming_and_outgoing_servers() {
    let c = config(TlsMode::Tls);
    let root = parse(&thunderbird(&c, "example.test").unwrap());
    assert_eq!(root.name, "clientConfig");
    assert_eq!(root.attr("version"), Some("1.1"));
    let p = root.child("emailProvider");
    assert_eq!(p.attr("id"), Some("example.test"));
    assert_eq!(p.text_of("domain"), "example.test");
    let [imap] = p.all("incomingServer").collect::<Vec<_>>()[..] else {
        panic!("one incoming server")
    };
    assert_eq!(imap.attr("type"), Some("imap"));
    assert_eq!(imap.text_of("hostname"), "imap.example.test");
    assert_eq!(imap.text_of("port"), "993");
    assert_eq!(imap.text_of("socketType"), "SSL");
    assert_eq!(imap.text_of("authentication"), "password-cleartext");
    assert_eq!(imap.text_of("username"), "%EMAILADDRESS%");
    let out: Vec<(&str, &str)> = p
        .all("outgoingServer")
        .map(|o| {
            assert_eq!(o.attr("type"), Some("smtp"));
            assert_eq!(o.text_of("hostname"), "mx.example.test");
            assert_eq!(o.text_of("username"), "%EMAILADDRESS%");
            (o.text_of("port"), o.text_of("socketType"))
        })
        .collect();
    assert_eq!(out, vec![("2465", "SSL"), ("2587", "STARTTLS")]);
}

#[test]
fn thunderbird_file_says_starttls_for_a_starttls_mailbox_server() {
    let c = config(TlsMode::Starttls);
    let root = parse(&thunderbird(&c, "example.test").unwrap());
    let imap = root.child("emailProvider").child("incomingServer");
    assert_eq!(imap.text_of("socketType"), "STARTTLS");
}

#[test]
fn no_thunderbird_file_for_a_foreign_domain() {
    let c = config(TlsMode::Tls);
    assert_eq!(thunderbird(&c, "gmail.com"), None);
}

#[test]
fn without_a_mailbox_server_the_file_names_only_the_outgoing_servers() {
    let mut c = config(TlsMode::Tls);
    c.autoconfig = Autoconfig::default();
    let root = parse(&thunderbird(&c, "example.test").unwrap());
    let p = root.child("emailProvider");
    assert_eq!(p.all("incomingServer").count(), 0);
    assert_eq!(p.all("outgoingServer").count(), 2);
}

#[test]
fn the_requested_domain_comes_from_the_address_then_the_host() {
    let c = config(TlsMode::Tls);
    let d = |e, h| requested_domain(&c, e, h);
    assert_eq!(d(Some("a@Example.Test"), None), Some("example.test".into()));
    assert_eq!(
        d(Some("a@gmail.com"), Some("autoconfig.example.test")),
        None
    );
    assert_eq!(
        d(None, Some("autoconfig.example.test")),
        Some("example.test".into())
    );
    assert_eq!(
        d(None, Some("example.test:8025")),
        Some("example.test".into())
    );
    assert_eq!(d(None, Some("autoconfig.gmail.com")), None);
    assert_eq!(d(None, Some("127.0.0.1:8025")), Some("example.test".into()));
    assert_eq!(d(None, Some("[::1]:8025")), Some("example.test".into()));
    assert_eq!(d(None, None), Some("example.test".into()));
}

#[test]
fn outlook_answer_lists_imap_and_smtp_protocols() {
    let c = config(TlsMode::Tls);
    let root = parse(&outlook(&c, "alice@example.test").unwrap());
    assert_eq!(root.name, "Autodiscover");
    let account = root.child("Response").child("Account");
    assert_eq!(account.text_of("AccountType"), "email");
    assert_eq!(account.text_of("Action"), "settings");
    let got: Vec<(&str, &str, &str, &str)> = account
        .all("Protocol")
        .map(|p| {
            assert_eq!(p.text_of("LoginName"), "alice@example.test");
            (
                p.text_of("Type"),
                p.text_of("Server"),
                p.text_of("Port"),
                p.text_of("Encryption"),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("IMAP", "imap.example.test", "993", "SSL"),
            ("SMTP", "mx.example.test", "2465", "SSL"),
            ("SMTP", "mx.example.test", "2587", "TLS"),
        ]
    );
}

#[test]
fn no_outlook_answer_for_a_foreign_address() {
    let c = config(TlsMode::Tls);
    assert_eq!(outlook(&c, "someone@gmail.com"), None);
    assert_eq!(outlook(&c, "@example.test"), None);
}

#[test]
fn the_outlook_request_names_the_address() {
    let req = "<Autodiscover><Request><EMailAddress> alice@example.test </EMailAddress></Request></Autodiscover>";
    assert_eq!(outlook_address(req), Some("alice@example.test"));
    assert_eq!(outlook_address("<Autodiscover/>"), None);
}

#[test]
fn srv_records_follow_rfc_6186_for_the_tls_mode() {
    let mut c = config(TlsMode::Tls);
    c.autoconfig.pop3 = Some(MailboxServer {
        host: "pop.example.test".into(),
        port: 110,
        tls: TlsMode::Starttls,
    });
    assert_eq!(
        srv_records(&c, "example.test"),
        vec![
            "_imaps._tcp.example.test. IN SRV 0 1 993 imap.example.test.",
            "_pop3._tcp.example.test. IN SRV 0 1 110 pop.example.test.",
        ]
    );
}
