//! Every DKIM vector in tests/data/dkim, verified by the inbound verifier
//! (`Verifier::check_message`) against the key records the vector gives
//! and nothing else (`Verifier::offline`). The expected results are those
//! of tests/data/dkim/README.md, which were checked with dkimpy.
//!
//! "pass" means every signature of the message passes; "not pass" means
//! none does (fail, neutral and permerror are all correct there, README
//! "Result vocabulary").

use portcullis_authn::{TxtRecords, Verifier};
use std::path::{Path, PathBuf};

const DATA: &str = "tests/data/dkim";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Pass,
    NotPass,
}

/// A message, the TXT records published for it, and the verdict.
struct Vector {
    /// The file the message comes from, for the failure message.
    file: String,
    message: Vec<u8>,
    records: Vec<(String, String)>,
    expect: Expect,
}

fn path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(DATA).join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(path(rel)).unwrap_or_else(|e| panic!("{DATA}/{rel}: {e}"))
}

fn read_text(rel: &str) -> String {
    String::from_utf8(read(rel)).unwrap_or_else(|e| panic!("{DATA}/{rel}: {e}"))
}

/// dkimpy's and mail-auth's files are stored with LF endings; both suites
/// hash them with CRLF, as they travel (README).
fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 40);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// `<name> <TXT value>` lines (a dns.txt, or a mail-auth case's head).
fn records(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.split_once(' ').unwrap_or((l, ""));
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect()
}

/// A mail-auth case: the records, a blank line, the message (README §4).
fn mail_auth_case(rel: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let text = read(rel);
    let split = text
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or_else(|| panic!("{DATA}/{rel}: no blank line after the records"));
    let head = std::str::from_utf8(&text[..split]).expect("records are text");
    (records(head), crlf(&text[split + 2..]))
}

fn vector(file: &str, message: Vec<u8>, records: Vec<(String, String)>, expect: Expect) -> Vector {
    Vector {
        file: format!("{DATA}/{file}"),
        message,
        records,
        expect,
    }
}

/// The DKIM results the verifier wrote, one per signature, in the
/// Authentication-Results header it made (RFC 8601 §2.7.1).
fn dkim_results(header: &str) -> Vec<String> {
    header
        .match_indices("dkim=")
        .filter(|(i, _)| {
            header[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_whitespace() || c == ';')
        })
        .map(|(i, m)| {
            header[i + m.len()..]
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect()
        })
        .collect()
}

/// DKIM-Signature fields in the message's header section.
fn signatures(message: &[u8]) -> usize {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    message[..end]
        .split(|&b| b == b'\n')
        .filter(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"dkim-signature:"))
        .count()
}

/// Why `v` does not come out as expected, or None.
async fn check(v: &Vector) -> Option<String> {
    let mut table = TxtRecords::new();
    for (name, value) in &v.records {
        table.insert(name, value.as_bytes());
    }
    let verifier = match Verifier::offline("mx.portcullis.test", table) {
        Ok(verifier) => verifier,
        Err(e) => return Some(e.to_string()),
    };
    // SPF does not matter to DKIM; offline it finds no record (none).
    let spf = verifier
        .spf("192.0.2.1".parse().unwrap(), "client.test", None, 0)
        .await;
    let out = verifier.check_message(&v.message, &spf).await;
    let results = dkim_results(&out.header);
    let wrong = match v.expect {
        Expect::Pass => results.iter().any(|r| r != "pass"),
        Expect::NotPass => results.iter().any(|r| r == "pass"),
    };
    let signed = signatures(&v.message);
    if wrong || results.len() != signed {
        return Some(format!(
            "want {:?} for each of {signed} signature(s), got dkim={results:?}\n{}",
            v.expect,
            out.header.trim_end()
        ));
    }
    None
}

/// Check every vector; report all that fail.
fn run(vectors: &[Vector]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let failures: Vec<String> = vectors
        .iter()
        .filter_map(|v| Some(format!("{}: {}", v.file, rt.block_on(check(v))?)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}

fn dns(rel: &str) -> Vec<(String, String)> {
    records(&read_text(rel))
}

#[test]
fn rfc_examples_verify() {
    run(&[
        // RFC 8463 A.3: ed25519-sha256 and rsa-sha256, both pass (README §1).
        vector(
            "rfc8463/signed.eml",
            read("rfc8463/signed.eml"),
            dns("rfc8463/dns.txt"),
            Expect::Pass,
        ),
        // RFC 6376 A.2 with errata 3192/4926's single space; a 1024-bit
        // key, which RFC 8301 still requires verifiers to accept.
        vector(
            "rfc6376/A2_signed.eml",
            read("rfc6376/A2_signed.eml"),
            dns("rfc6376/dns.txt"),
            Expect::Pass,
        ),
    ]);
}

#[test]
fn dkimpy_signed_messages_verify() {
    let exim = read_text("dkimpy/eximtest.dns");
    run(&[
        // Exim's Ed25519 signer, key in eximtest.dns (README §3).
        vector(
            "dkimpy/ed25519test2.msg",
            crlf(&read("dkimpy/ed25519test2.msg")),
            vec![("sed._domainkey.test.ex".into(), exim.trim().into())],
            Expect::Pass,
        ),
        // Two spaces in the body, signed twice with simple/simple.
        vector(
            "dkimpy/rfc6376.signed.msg",
            crlf(&read("dkimpy/rfc6376.signed.msg")),
            dns("dkimpy/dns.txt"),
            Expect::Pass,
        ),
        // Gmail, 2013, with degenerate folding of the signature.
        vector(
            "dkimpy/test2.message",
            crlf(&read("dkimpy/test2.message")),
            dns("dkimpy/dns.txt"),
            Expect::Pass,
        ),
    ]);
}

#[test]
fn mail_auth_messages_verify() {
    let vectors: Vec<Vector> = (1..=6)
        .map(|n| {
            let file = format!("mail-auth/00{n}.txt");
            let (records, message) = mail_auth_case(&file);
            // 005 carries x=1667930064: it passes at mail-auth's fixed
            // time, but the verifier reads the clock and the signature has
            // expired since (RFC 6376 §3.5 x=; README §4).
            let expect = if n == 5 {
                Expect::NotPass
            } else {
                Expect::Pass
            };
            vector(&file, message, records, expect)
        })
        .collect();
    run(&vectors);
}

#[test]
fn one_edit_derivations_verify_as_dkimpy_says() {
    let rfc8463 = dns("rfc8463/dns.txt");
    let rfc6376 = dns("rfc6376/dns.txt");
    let derived = |name: &str, records: &Vec<(String, String)>, expect| {
        let file = format!("derived/{name}.eml");
        vector(&file, read(&file), records.clone(), expect)
    };
    run(&[
        // Body hash mismatch.
        derived("rfc8463_body_altered", &rfc8463, Expect::NotPass),
        // Signature mismatch.
        derived("rfc8463_subject_altered", &rfc8463, Expect::NotPass),
        // From is over-signed in h=, so a second From breaks both.
        derived("rfc8463_extra_from_appended", &rfc8463, Expect::NotPass),
        // Relaxed canonicalization absorbs whitespace (RFC 6376 §3.4.2,
        // §3.4.4).
        derived("rfc8463_relaxed_whitespace_ok", &rfc8463, Expect::Pass),
        derived("rfc6376_A2_body_two_spaces", &rfc6376, Expect::NotPass),
        // Simple header canonicalization keeps folding (§3.4.1).
        derived("rfc6376_A2_header_refolded", &rfc6376, Expect::NotPass),
    ]);
}

/// One message signed by `test._domainkey.example.com`, verified against
/// each of dkimpy's variants of that key record (README §3 and §5).
#[test]
fn key_record_variants() {
    let variants = [
        ("test.txt", Expect::Pass),
        // No k=: it defaults to rsa (RFC 6376 §3.6.1).
        ("test2.txt", Expect::Pass),
        // `v=DKIM1:` is not the version tag: the record is malformed.
        ("badversion.txt", Expect::NotPass),
        // An unknown key type.
        ("badk.txt", Expect::NotPass),
        // A p= that does not parse.
        ("test_bad.txt", Expect::NotPass),
        // s=tlsrpt: the key is not for email (§3.6.1 s=).
        ("test_tlsrpt.txt", Expect::NotPass),
    ];
    let mut vectors = Vec::new();
    for canon in ["simple_simple", "relaxed_relaxed"] {
        let file = format!("derived/dkimpy_test_message_signed_{canon}.eml");
        for (key, expect) in variants {
            let record = read_text(&format!("dkimpy/{key}"));
            vectors.push(vector(
                &format!("{file} with dkimpy/{key}"),
                read(&file),
                vec![("test._domainkey.example.com".into(), record.trim().into())],
                expect,
            ));
        }
    }
    run(&vectors);
}
