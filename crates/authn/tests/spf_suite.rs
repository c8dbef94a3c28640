//! The OpenSPF RFC 7208 test suite (tests/data/spf/rfc7208-tests.yml,
//! release 2014.04: 16 scenarios, 203 tests) run against our check_host().
//!
//! Each scenario brings its own DNS (`zonedata`). It is answered here from
//! a table with the semantics of pyspf's harness, which is how the suite's
//! authors ran it, and how tests/e2e/spfzone.py serves such zones over the
//! wire (it did for this suite, and still does for the pyspf cross-check
//! in test_t08); see [`Zone`]. Each test gives the client
//! address, HELO and MAIL FROM, and the result (or results) allowed; some
//! give the explanation a `fail` must carry (RFC 7208 §6.2).

use portcullis_authn::AuthResult;
use portcullis_authn::spf::{Answer, SpfDns, SpfQuery, SpfVerdict, check_host};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::LazyLock;
use yaml_rust2::{Yaml, YamlLoader};

const SUITE: &str = "tests/data/spf/rfc7208-tests.yml";

/// One scenario: a description, its tests and its DNS.
struct Scenario {
    description: String,
    tests: Vec<Case>,
    zone: Zone,
}

struct Case {
    name: String,
    spec: String,
    helo: String,
    host: IpAddr,
    mail_from: String,
    /// Any of these results passes the test.
    results: Vec<String>,
    explanation: Option<String>,
}

fn load_suite() -> Vec<Scenario> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(SUITE);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{SUITE}: {e}"));
    let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{SUITE}: {e}"));
    docs.iter().map(scenario).collect()
}

fn scenario(doc: &Yaml) -> Scenario {
    let description = text(&doc["description"], "description");
    let tests = doc["tests"]
        .as_hash()
        .unwrap_or_else(|| panic!("{description}: no tests"))
        .iter()
        .map(|(name, t)| {
            let name = text(name, "test name");
            let field = |key: &str| text(&t[key], &format!("{name}: {key}"));
            let results = match &t["result"] {
                Yaml::Array(any) => any.iter().map(|r| text(r, &name)).collect(),
                one => vec![text(one, &name)],
            };
            let host = field("host");
            Case {
                host: host
                    .parse()
                    .unwrap_or_else(|e| panic!("{name}: host {host}: {e}")),
                spec: section(&t["spec"]),
                helo: field("helo"),
                mail_from: text_or(&t["mailfrom"], ""),
                explanation: t["explanation"].as_str().map(str::to_owned),
                results,
                name,
            }
        })
        .collect();
    Scenario {
        zone: Zone::from_zonedata(&doc["zonedata"], &description),
        description,
        tests,
    }
}

fn text(y: &Yaml, what: &str) -> String {
    y.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {y:?}"))
        .to_owned()
}

fn text_or(y: &Yaml, default: &str) -> String {
    match y {
        Yaml::BadValue => default.to_owned(),
        other => text(other, "field"),
    }
}

/// The RFC section a test cites: `4.3/1`, or a bare `3.3` that YAML reads
/// as a number (kept as written).
fn section(y: &Yaml) -> String {
    match y {
        Yaml::Real(written) => written.clone(),
        Yaml::Integer(n) => n.to_string(),
        other => text_or(other, "?"),
    }
}

/// A scenario's zonedata as the suite's harness answers it:
///
/// * a name that is not in the zone does not exist (NXDOMAIN);
/// * `TIMEOUT` beside a name's records makes every query for a type the
///   name has no record of go unanswered (a DNS error: temperror, §4.4);
/// * a TXT query is answered by the TXT records, or, when the name
///   declares none, by its type-SPF records (the suite's "auto-magic
///   duplication of SPF to TXT"); a value `NONE` declares a type with no
///   record, so `TXT: NONE` turns the duplication off;
/// * a CNAME is followed to its target (a loop: the name does not exist);
/// * names are compared as raw labels, without case: `a:` targets may
///   hold any visible character (§7.1) and reach DNS as they are.
///
/// What reaches check_host() is what our resolver adapter
/// (`spf::ResolverDns`) made of such answers: no record of the type
/// (NXDOMAIN or an empty answer) is "not found", no answer is an error.
#[derive(Default)]
struct Zone {
    names: HashMap<String, Node>,
}

#[derive(Default)]
struct Node {
    timeout: bool,
    /// Whether a TXT entry is given at all, `NONE` included.
    txt_declared: bool,
    txt: Vec<Vec<u8>>,
    spf: Vec<Vec<u8>>,
    /// Addresses as written: one that does not parse makes the server
    /// fail the whole query, which it then answers with NXDOMAIN.
    a: Vec<String>,
    aaaa: Vec<String>,
    mx: Vec<(i64, String)>,
    ptr: Vec<String>,
    cname: Vec<String>,
}

#[derive(Clone, Copy)]
enum Kind {
    Txt,
    A,
    Aaaa,
    Mx,
    Ptr,
}

/// One record's data as the resolver adapter hands it over.
enum Data {
    Txt(Vec<u8>),
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx(i64, String),
    Ptr(String),
}

/// What the server does with one query.
enum Reply {
    Answers(Vec<Data>),
    NxDomain,
    /// No answer at all: the resolver times out.
    Silence,
    /// The harness raised while building the reply, and answered NXDOMAIN.
    Broken,
}

/// Deeper than this, a CNAME chain is a loop: the harness recursed until
/// Python gave up, and answered NXDOMAIN.
const CNAME_LOOP: usize = 32;

impl Zone {
    fn from_zonedata(zonedata: &Yaml, scenario: &str) -> Zone {
        let mut zone = Zone::default();
        let Some(names) = zonedata.as_hash() else {
            return zone;
        };
        for (name, entries) in names {
            let name = text(name, scenario);
            let node = zone.names.entry(norm(&name)).or_default();
            for entry in entries.as_vec().into_iter().flatten() {
                if entry.as_str() == Some("TIMEOUT") {
                    node.timeout = true;
                    continue;
                }
                let entry = entry
                    .as_hash()
                    .unwrap_or_else(|| panic!("{scenario}: {name}: entry {entry:?}"));
                for (kind, value) in entry {
                    let kind = text(kind, &name);
                    node.add(&kind, value, &format!("{scenario}: {name}"));
                }
            }
        }
        zone
    }

    /// The server's reply to `name`/`kind`, as tests/e2e/spfzone.py gave it.
    fn query(&self, name: &str, kind: Kind, depth: usize) -> Reply {
        let Some(node) = self.names.get(&wire_norm(name)) else {
            return Reply::NxDomain;
        };
        if depth > CNAME_LOOP {
            return Reply::Broken;
        }
        let own = node.answers(kind);
        if node.timeout {
            match &own {
                None => return Reply::Broken,
                Some(a) if a.is_empty() && node.cname.is_empty() => return Reply::Silence,
                Some(_) => {}
            }
        }
        if let Some(target) = node.cname.first() {
            // The CNAME and whatever its target gives; a target that does
            // not exist leaves the CNAME alone (NOERROR, no such record).
            return match self.query(target, kind, depth + 1) {
                Reply::NxDomain => Reply::Answers(Vec::new()),
                other => other,
            };
        }
        own.map_or(Reply::Broken, Reply::Answers)
    }

    fn lookup(&self, name: &str, kind: Kind) -> Answer<Vec<Data>> {
        match self.query(name, kind, 0) {
            Reply::Answers(a) if !a.is_empty() => Answer::Found(a),
            Reply::Answers(_) | Reply::NxDomain | Reply::Broken => Answer::NotFound,
            Reply::Silence => Answer::Error("timed out (TIMEOUT in zonedata)".into()),
        }
    }

    /// Whether the resolver adapter sends `name` at all: a name DNS cannot
    /// carry (an empty label, a label over 63 octets, over 253 in all) is
    /// not found without a query.
    fn sendable(name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| !l.is_empty() && l.len() <= 63)
    }

    fn ask(&self, name: &str, kind: Kind) -> Answer<Vec<Data>> {
        if !Zone::sendable(name) {
            return Answer::NotFound;
        }
        self.lookup(name, kind)
    }
}

impl Node {
    fn add(&mut self, kind: &str, value: &Yaml, at: &str) {
        if value.as_str() == Some("NONE") {
            self.txt_declared |= kind == "TXT";
            return;
        }
        let name = |v: &Yaml| text(v, at).trim_end_matches('.').to_owned();
        match kind {
            "TXT" => {
                self.txt_declared = true;
                self.txt.push(txt_value(value, at));
            }
            "SPF" => self.spf.push(txt_value(value, at)),
            "A" => self.a.push(text(value, at)),
            "AAAA" => self.aaaa.push(text(value, at)),
            "MX" => {
                let (Some(pref), Some(host)) = (value[0].as_i64(), value[1].as_str()) else {
                    panic!("{at}: MX {value:?}");
                };
                self.mx.push((pref, host.trim_end_matches('.').to_owned()));
            }
            "PTR" => self.ptr.push(name(value)),
            "CNAME" => self.cname.push(name(value)),
            other => panic!("{at}: record type {other}"),
        }
    }

    /// This name's own records of `kind`; None when building the reply
    /// fails (an address that does not parse).
    fn answers(&self, kind: Kind) -> Option<Vec<Data>> {
        Some(match kind {
            Kind::Txt => {
                let records = if self.txt_declared {
                    &self.txt
                } else {
                    &self.spf
                };
                records.iter().cloned().map(Data::Txt).collect()
            }
            Kind::A => self
                .a
                .iter()
                .map(|a| a.parse().ok().map(Data::A))
                .collect::<Option<_>>()?,
            Kind::Aaaa => self
                .aaaa
                .iter()
                .map(|a| a.parse().ok().map(Data::Aaaa))
                .collect::<Option<_>>()?,
            Kind::Mx => self
                .mx
                .iter()
                .map(|(p, h)| Data::Mx(*p, h.clone()))
                .collect(),
            Kind::Ptr => self.ptr.iter().cloned().map(Data::Ptr).collect(),
        })
    }
}

/// A TXT value: one string, or several sent as one record's strings
/// (joined by the resolver). `[]` is one empty string: a TXT record of no
/// strings cannot be sent.
fn txt_value(value: &Yaml, at: &str) -> Vec<u8> {
    match value {
        Yaml::Array(parts) => parts
            .iter()
            .flat_map(|p| text(p, at).into_bytes())
            .collect(),
        // The suite's `\xEF`-style escapes are characters; they go on the
        // wire UTF-8 encoded.
        one => text(one, at).into_bytes(),
    }
}

/// Zone keys: without case or trailing dot.
fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_lowercase()
}

/// A queried name as the harness read it: each octet as a Latin-1
/// character, then without case.
fn wire_norm(name: &str) -> String {
    let latin1: String = name.bytes().map(char::from).collect();
    norm(&latin1)
}

impl SpfDns for Zone {
    async fn txt(&self, name: &str) -> Answer<Vec<Vec<u8>>> {
        self.ask(name, Kind::Txt).map(|d| {
            d.into_iter()
                .filter_map(|d| match d {
                    Data::Txt(t) => Some(t),
                    _ => None,
                })
                .collect()
        })
    }

    async fn a(&self, name: &str) -> Answer<Vec<Ipv4Addr>> {
        self.ask(name, Kind::A).map(|d| {
            d.into_iter()
                .filter_map(|d| match d {
                    Data::A(a) => Some(a),
                    _ => None,
                })
                .collect()
        })
    }

    async fn aaaa(&self, name: &str) -> Answer<Vec<Ipv6Addr>> {
        self.ask(name, Kind::Aaaa).map(|d| {
            d.into_iter()
                .filter_map(|d| match d {
                    Data::Aaaa(a) => Some(a),
                    _ => None,
                })
                .collect()
        })
    }

    async fn mx(&self, name: &str) -> Answer<Vec<String>> {
        self.ask(name, Kind::Mx).map(|d| {
            let mut mx: Vec<(i64, String)> = d
                .into_iter()
                .filter_map(|d| match d {
                    Data::Mx(p, h) => Some((p, h)),
                    _ => None,
                })
                .collect();
            // As the adapter does: lowest preference first, ties in the
            // order given.
            mx.sort_by_key(|(p, _)| *p);
            mx.into_iter().map(|(_, h)| h).collect()
        })
    }

    async fn ptr(&self, ip: IpAddr) -> Answer<Vec<String>> {
        let zone = if ip.is_ipv4() {
            "in-addr.arpa"
        } else {
            "ip6.arpa"
        };
        let name = portcullis_authn::dnsbl_query(ip, zone);
        self.ask(&name, Kind::Ptr).map(|d| {
            d.into_iter()
                .filter_map(|d| match d {
                    Data::Ptr(p) => Some(p),
                    _ => None,
                })
                .collect()
        })
    }
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

fn evaluate(zone: &Zone, case: &Case) -> SpfVerdict {
    let query = SpfQuery {
        ip: case.host,
        helo: &case.helo,
        // An empty MAIL FROM is the null sender: HELO is checked (§2.4).
        mail_from: Some(case.mail_from.as_str()).filter(|m| !m.is_empty()),
        // No test's expectation depends on %{r} or %{t}.
        receiver: "mx.portcullis.test",
        now: 1_700_000_000,
    };
    now(check_host(zone, &query))
}

/// The suite's "DEFAULT" stands for the checker's own explanation of a
/// fail without a usable exp= (§6.2); ours names the domain and the
/// client's address, IPv4-mapped IPv6 written as IPv4 (§5).
fn expected_explanation(case: &Case, wanted: &str) -> String {
    if wanted != "DEFAULT" {
        return wanted.to_owned();
    }
    let domain = match case.mail_from.rsplit_once('@') {
        Some((_, d)) => d,
        None => &case.helo,
    };
    let ip = case.host.to_canonical();
    format!("{domain} does not designate {ip} as a permitted sender")
}

/// Why `case` fails, or None when it holds.
fn check(zone: &Zone, case: &Case) -> Option<String> {
    let verdict = evaluate(zone, case);
    let got = verdict.result.as_str();
    if !case.results.iter().any(|r| r == got) {
        let reason = match verdict.reason.as_str() {
            "" => String::new(),
            why => format!(" ({why})"),
        };
        return Some(format!(
            "got {got}, want {}{reason}",
            case.results.join(" or ")
        ));
    }
    let wanted = case.explanation.as_deref()?;
    if verdict.result != AuthResult::Fail {
        return None;
    }
    // Letters compare without case: the suite writes the IPv6 nibbles of
    // %{i} in upper case, RFC 7208 §7.3's own example in lower case, and
    // DNS does not care.
    let want = expected_explanation(case, wanted);
    match &verdict.explanation {
        Some(got) if got.eq_ignore_ascii_case(&want) => None,
        got => Some(format!("explanation {got:?}, want {want:?}")),
    }
}

/// The suite, read once for all the tests below.
static LOADED: LazyLock<Vec<Scenario>> = LazyLock::new(load_suite);

/// Every test of the scenario described as `description`, which has
/// `count` of them; all failures are reported together.
fn run_scenario(description: &str, count: usize) {
    let scenario = LOADED
        .iter()
        .find(|s| s.description == description)
        .unwrap_or_else(|| panic!("{SUITE}: no scenario \"{description}\""));
    let failures: Vec<String> = scenario
        .tests
        .iter()
        .filter_map(|case| {
            let why = check(&scenario.zone, case)?;
            Some(format!(
                "{SUITE}: \"{description}\" / {} (spec {}): {why}",
                case.name, case.spec
            ))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        scenario.tests.len(),
        failures.join("\n")
    );
    // A reader that dropped tests would pass what it never ran.
    assert_eq!(scenario.tests.len(), count, "{description}: tests run");
}

#[test]
fn the_suite_has_16_scenarios_and_203_tests() {
    let tests: usize = LOADED.iter().map(|s| s.tests.len()).sum();
    assert_eq!((LOADED.len(), tests), (16, 203));
}

#[test]
fn initial_processing() {
    run_scenario("Initial processing", 16);
}

#[test]
fn record_lookup() {
    run_scenario("Record lookup", 7);
}

#[test]
fn selecting_records() {
    run_scenario("Selecting records", 10);
}

#[test]
fn record_evaluation() {
    run_scenario("Record evaluation", 12);
}

#[test]
fn all_mechanism_syntax() {
    run_scenario("ALL mechanism syntax", 5);
}

#[test]
fn ptr_mechanism_syntax() {
    run_scenario("PTR mechanism syntax", 8);
}

#[test]
fn a_mechanism_syntax() {
    run_scenario("A mechanism syntax", 29);
}

#[test]
fn include_mechanism_semantics_and_syntax() {
    run_scenario("Include mechanism semantics and syntax", 9);
}

#[test]
fn mx_mechanism_syntax() {
    run_scenario("MX mechanism syntax", 21);
}

#[test]
fn exists_mechanism_syntax() {
    run_scenario("EXISTS mechanism syntax", 7);
}

#[test]
fn ip4_mechanism_syntax() {
    run_scenario("IP4 mechanism syntax", 9);
}

#[test]
fn ip6_mechanism_syntax() {
    run_scenario("IP6 mechanism syntax", 9);
}

#[test]
fn semantics_of_exp_and_other_modifiers() {
    run_scenario("Semantics of exp and other modifiers", 24);
}

#[test]
fn macro_expansion_rules() {
    run_scenario("Macro expansion rules", 24);
}

#[test]
fn processing_limits() {
    run_scenario("Processing limits", 11);
}

#[test]
fn test_cases_from_implementation_bugs() {
    run_scenario("Test cases from implementation bugs", 2);
}
