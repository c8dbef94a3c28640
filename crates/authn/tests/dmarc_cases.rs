//! The DMARC cases of tests/data/dmarc/dmarc_cases.yml: record parsing,
//! identifier alignment and policy discovery, transcribed from mail-auth's
//! tests and RFC 7489's examples (see the file's head and SOURCES.md).
//!
//! We follow RFC 7489: the record at the From: domain, else at its
//! organizational domain from the Public Suffix List (§6.6.3, §3.2). The
//! cases marked `dmarcbis_only` expect DMARCbis discovery (the DNS tree
//! walk, np=, psd=); they run under RFC 7489 with the outcome each case's
//! note gives, and again under `[dmarc] discovery = "tree-walk"`
//! (mail-auth's DMARCbis) with the file's own expectations.

use portcullis_authn::dmarc::{self, Identifiers, Mechanism};
use portcullis_authn::{AuthResult, DmarcEvaluation, SuffixList, TxtRecords, Verifier};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use yaml_rust2::{Yaml, YamlLoader};

const CASES: &str = "tests/data/dmarc/dmarc_cases.yml";

fn load() -> Yaml {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(CASES);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{CASES}: {e}"));
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{CASES}: {e}"));
    docs.remove(0)
}

fn string(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Integer(n) => Some(n.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A case's id and where it comes from, for failure messages.
fn label(case: &Yaml) -> String {
    let id = case["id"].as_str().unwrap_or("?");
    let origin = case["origin"].as_str().unwrap_or("?");
    format!("{CASES}: {id} ({origin})")
}

/// Report every failure of a group at once.
fn report(group: &str, run: usize, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{group}: {} of {run} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------- parsing

#[test]
fn record_parsing() {
    let cases = load()["record_parsing"]
        .clone()
        .into_vec()
        .unwrap_or_default();
    let mut failures = Vec::new();
    for case in &cases {
        let record = case["record"].as_str().expect("record");
        let expect = case["expect"].as_hash().expect("expect");
        let parsed = dmarc::parse_record(record);
        let valid = case["expect"]["valid"].as_bool().expect("valid");
        let mut wrong = Vec::new();
        match (&parsed, valid) {
            (Ok(_), true) | (Err(_), false) => {}
            (Ok(_), false) => wrong.push("parsed, want invalid".to_owned()),
            (Err(e), true) => wrong.push(format!("invalid ({e}), want valid")),
        }
        if let Ok(r) = &parsed {
            for (key, want) in expect {
                let key = key.as_str().unwrap_or("?");
                let got = match key {
                    "valid" => continue,
                    // §6.6.3: no valid p but a valid rua counts as p=none.
                    "p" | "effective_p" => r.p.as_str().to_owned(),
                    "sp" => r.sp.as_str().to_owned(),
                    "adkim" => r.adkim.as_str().to_owned(),
                    "aspf" => r.aspf.as_str().to_owned(),
                    "pct" => r.pct.to_string(),
                    // Reporting tags: we send no reports, and keep rua
                    // only for the §6.6.3 fallback above.
                    "fo" | "rua" | "ruf" => continue,
                    other => {
                        wrong.push(format!("expectation {other} is not checked here"));
                        continue;
                    }
                };
                let want = string(want).unwrap_or_else(|| format!("{want:?}"));
                if got != want {
                    wrong.push(format!("{key}: got {got}, want {want}"));
                }
            }
        }
        if !wrong.is_empty() {
            failures.push(format!("{}: {record:?}: {}", label(case), wrong.join("; ")));
        }
    }
    report("record_parsing", cases.len(), failures);
    assert_eq!(cases.len(), 12, "record_parsing cases");
}

// ----------------------------------------------------------- evaluation

/// What a verification case gives: the From: domain, the mechanisms'
/// outcomes, and the DNS (TXT unless the key names another type).
struct Case {
    id: String,
    label: String,
    note: String,
    from_domain: String,
    spf: Mechanism,
    dkim: Option<Mechanism>,
    dns: Vec<(String, String, String)>,
    expect: Vec<(String, String)>,
    dmarcbis_only: bool,
}

fn case(y: &Yaml) -> Case {
    let from_domain = match y["from_domain"].as_str() {
        Some(d) => d.to_owned(),
        None => {
            let from = y["from"].as_str().expect("from or from_domain");
            from.rsplit_once('@').map_or(from, |(_, d)| d).to_owned()
        }
    };
    let mechanism = |m: &Yaml, domain_key: &str| Mechanism {
        // "fail (signature expired)": the result is the first word.
        result: m["result"]
            .as_str()
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("none")
            .to_owned(),
        domain: m[domain_key].as_str().unwrap_or("").to_owned(),
    };
    let spf = match &y["spf"] {
        Yaml::Hash(_) => mechanism(&y["spf"], "domain"),
        _ => Mechanism {
            result: "none".into(),
            domain: String::new(),
        },
    };
    let dkim = match &y["dkim"] {
        Yaml::Hash(_) => Some(mechanism(&y["dkim"], "d")).filter(|m| m.result != "none"),
        _ => None,
    };
    let dns = y["dns"]
        .as_hash()
        .into_iter()
        .flatten()
        .map(|(key, value)| {
            let key = key.as_str().expect("dns name");
            let (name, kind) = key.split_once(' ').unwrap_or((key, "TXT"));
            let value = value.as_str().expect("dns value");
            (name.to_owned(), kind.to_owned(), value.to_owned())
        })
        .collect();
    Case {
        id: y["id"].as_str().expect("id").to_owned(),
        label: label(y),
        note: y["note"].as_str().unwrap_or("").to_owned(),
        from_domain,
        spf,
        dkim,
        dns,
        expect: expectations(&y["expect"]),
        dmarcbis_only: y["dmarcbis_only"].as_bool().unwrap_or(false),
    }
}

fn expectations(y: &Yaml) -> Vec<(String, String)> {
    y.as_hash()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let k = k.as_str().expect("expectation key").to_owned();
            (k, string(v).expect("expectation value"))
        })
        .collect()
}

/// The alignment and policy-discovery cases.
fn verification_cases() -> Vec<Case> {
    let all = load();
    let cases: Vec<Case> = ["alignment", "policy_discovery"]
        .iter()
        .flat_map(|group| all[*group].as_vec().cloned().unwrap_or_default())
        .map(|y| case(&y))
        .collect();
    let bis = cases.iter().filter(|c| c.dmarcbis_only).count();
    assert_eq!((cases.len(), bis), (17, 4), "{CASES}: cases, dmarcbis_only");
    cases
}

/// The RFC 7489 outcome of each DMARCbis-only case, as its note states it.
fn rfc7489_outcome(id: &str) -> Option<Vec<(String, String)>> {
    let pairs: &[(&str, &str)] = match id {
        // No np=: a non-existent subdomain gets sp.
        "pol-3" => &[("policy", "quarantine")],
        // The note's "also pass" skips discovery: RFC 7489 asks only
        // _dmarc.a.mail.example.com and _dmarc.example.com (the PSL's
        // organizational domain), never _dmarc.mail.example.com where the
        // record is, so DMARC does not apply.
        "pol-6" => &[
            ("dmarc_record", "absent"),
            ("dmarc", "none"),
            ("spf_aligned", "none"),
        ],
        // No psd=: giant.bank.example and mega.bank.example share the
        // organizational domain bank.example (the PSL's default rule).
        "pol-7" => &[("spf_aligned", "pass")],
        // The record at the organizational domain; no sp, so sp=p.
        "pol-8" => &[("policy", "reject")],
        _ => return None,
    };
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

/// Compare an evaluation with the expectations; the reasons it differs.
fn compare(got: &DmarcEvaluation, expect: &[(String, String)]) -> Vec<String> {
    expect
        .iter()
        .filter_map(|(key, want)| {
            let got = match key.as_str() {
                "dmarc" => got.dmarc.as_str(),
                "dkim_aligned" => got.dkim_aligned.as_str(),
                "spf_aligned" => got.spf_aligned.as_str(),
                "policy" => got.policy.as_str(),
                "dmarc_record" if got.record_found => "found",
                "dmarc_record" => "absent",
                other => return Some(format!("expectation {other} is not checked here")),
            };
            (got != want).then(|| format!("{key}: got {got}, want {want}"))
        })
        .collect()
}

fn failure(case: &Case, wrong: Vec<String>) -> Option<String> {
    if wrong.is_empty() {
        return None;
    }
    let note = if case.note.is_empty() {
        String::new()
    } else {
        format!("\n    note: {}", case.note)
    };
    Some(format!("{}: {}{note}", case.label, wrong.join("; ")))
}

/// RFC 7489 discovery and evaluation (`dmarc::check`), DNS from the case.
fn rfc7489(case: &Case) -> DmarcEvaluation {
    let mut table = TxtRecords::new();
    for (name, kind, value) in &case.dns {
        // RFC 7489 discovery asks for TXT records only (§6.6.3).
        if kind == "TXT" {
            table.insert(name, value.as_bytes());
        }
    }
    let dkim: Vec<(AuthResult, String)> = case
        .dkim
        .iter()
        .map(|m| (AuthResult::parse(&m.result), m.domain.clone()))
        .collect();
    let ids = Identifiers {
        spf: AuthResult::parse(&case.spf.result),
        spf_domain: &case.spf.domain,
        dkim: &dkim,
    };
    // Sample 0: a failing message always falls inside pct; the cases
    // expect the policy asked for, not what pct makes of it.
    let psl = SuffixList::built_in();
    now(dmarc::check(&table, &case.from_domain, &ids, &psl, 0))
}

/// The table never waits: poll once.
fn now<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the table DNS never waits"),
    }
}

#[test]
fn alignment_and_discovery_under_rfc7489() {
    let cases = verification_cases();
    let failures = cases
        .iter()
        .filter_map(|case| {
            let expect = if case.dmarcbis_only {
                match rfc7489_outcome(&case.id) {
                    Some(e) => e,
                    None => return Some(format!("{}: no RFC 7489 outcome given", case.label)),
                }
            } else {
                case.expect.clone()
            };
            failure(case, compare(&rfc7489(case), &expect))
        })
        .collect();
    report("RFC 7489", cases.len(), failures);
}

// -------------------------------------------------------------- tree walk

/// mail-auth's DMARCbis code asks its resolver itself whether the From:
/// domain exists: np= applies to a subdomain that answers NXDOMAIN (RFC
/// 8020), and mail-auth's resolver cache can hold an address but not an
/// NXDOMAIN, so an offline verifier cannot say it. The tree-walk cases get
/// a DNS server inside this test process instead, on loopback, answering
/// from the case's records: NXDOMAIN for a name it does not have, no
/// answer (NOERROR) for a type the name does not have. Dropped (aborted)
/// with the handle it returns.
async fn loopback_dns(
    records: Vec<(String, String, String)>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use mail_auth::hickory_resolver::proto::op::{Message, ResponseCode};
    use mail_auth::hickory_resolver::proto::rr::rdata::{A, TXT};
    use mail_auth::hickory_resolver::proto::rr::{RData, Record};

    let mut zone: HashMap<String, Vec<RData>> = HashMap::new();
    for (name, kind, value) in records {
        let data = match kind.as_str() {
            "TXT" => RData::TXT(TXT::new(vec![value])),
            "A" => RData::A(A(value.parse::<Ipv4Addr>().expect("an address"))),
            other => panic!("record type {other} is not served here"),
        };
        zone.entry(name.to_ascii_lowercase())
            .or_default()
            .push(data);
    }
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
            reply.metadata.recursion_desired = query.metadata.recursion_desired;
            reply.metadata.recursion_available = true;
            for q in &query.queries {
                reply.add_query(q.clone());
                let name = q.name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
                let Some(data) = zone.get(&name) else {
                    reply.metadata.response_code = ResponseCode::NXDomain;
                    continue;
                };
                for d in data.iter().filter(|d| d.record_type() == q.query_type) {
                    reply.add_answer(Record::from_rdata(q.name.clone(), 60, d.clone()));
                }
            }
            let _ = socket.send_to(&reply.to_vec().unwrap(), peer).await;
        }
    });
    (addr, server)
}

async fn tree_walk(case: &Case) -> Result<DmarcEvaluation, String> {
    let (dns, server) = loopback_dns(case.dns.clone()).await;
    let verifier = Verifier::new("mx.portcullis.test", &[dns], Duration::from_secs(2))
        .map_err(|e| e.to_string())?
        .with_dmarc(true, SuffixList::built_in());
    let got = verifier
        .evaluate_dmarc(&case.from_domain, &case.spf, case.dkim.as_ref())
        .await;
    server.abort();
    got
}

#[test]
fn dmarcbis_only_cases_under_tree_walk() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases: Vec<Case> = verification_cases()
        .into_iter()
        .filter(|c| c.dmarcbis_only)
        .collect();
    let failures = cases
        .iter()
        .filter_map(|case| match rt.block_on(tree_walk(case)) {
            Ok(got) => failure(case, compare(&got, &case.expect)),
            Err(e) => Some(format!("{}: {e}", case.label)),
        })
        .collect();
    report("tree walk", cases.len(), failures);
}
