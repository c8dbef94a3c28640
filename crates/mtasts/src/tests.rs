use super::*;

const POLICY: &str = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";

#[test]
fn parses_the_rfc_example_policy() {
    let p = parse_policy(POLICY).unwrap();
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(p.max_age, 604_800);
    assert_eq!(
        p.mx,
        ["mail.example.com", "*.example.net", "backupmx.example.com"]
    );
}

#[test]
fn accepts_lf_line_endings_and_ignores_unknown_keys() {
    let p =
        parse_policy("version: STSv1\nmode: testing\nmx: a.example\nfuture: x\nmax_age: 86400\n")
            .unwrap();
    assert_eq!(p.mode, Mode::Testing);
}

#[test]
fn refuses_a_policy_without_version_first() {
    assert!(parse_policy("mode: enforce\nversion: STSv1\nmx: a.example\nmax_age: 1\n").is_err());
}

#[test]
fn refuses_a_policy_without_mx_unless_mode_none() {
    assert!(parse_policy("version: STSv1\nmode: enforce\nmax_age: 1\n").is_err());
    assert!(parse_policy("version: STSv1\nmode: none\nmax_age: 1\n").is_ok());
}

#[test]
fn refuses_an_unknown_mode_and_a_missing_max_age() {
    assert!(parse_policy("version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n").is_err());
    assert!(parse_policy("version: STSv1\nmode: enforce\nmx: a.example\n").is_err());
}

#[test]
fn refuses_a_max_age_beyond_a_year() {
    assert!(
        parse_policy("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 99999999999\n")
            .is_err()
    );
    let p =
        parse_policy("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557600\n").unwrap();
    assert_eq!(p.max_age, MAX_AGE_LIMIT);
}

#[test]
fn refuses_an_oversized_policy() {
    let big = format!(
        "version: STSv1\nmode: none\nmax_age: 1\n{}",
        "x: y\n".repeat(20_000)
    );
    assert!(parse_policy(&big).is_err());
}

#[test]
fn a_wildcard_stands_for_exactly_one_label() {
    let p = parse_policy(POLICY).unwrap();
    assert!(p.allows("mx1.example.net"));
    assert!(p.allows("MX1.Example.NET."));
    assert!(!p.allows("example.net"));
    assert!(!p.allows("a.b.example.net"));
    assert!(p.allows("mail.example.com"));
    assert!(!p.allows("evil.example.com"));
}

#[test]
fn parses_the_record_and_its_id() {
    assert_eq!(
        parse_record("v=STSv1; id=20160831085700Z;").unwrap().id,
        "20160831085700Z"
    );
    assert!(parse_record("v=STSv1").is_err());
    assert!(parse_record("v=STSv1; id=has-dash").is_err());
    assert!(parse_record("id=1; v=STSv1").is_err());
}

#[test]
fn two_records_mean_no_policy() {
    assert!(pick_record(["v=STSv1; id=1", "v=STSv1; id=2"]).is_none());
    assert_eq!(
        pick_record(["v=spf1 -all", "v=STSv1; id=1"]).unwrap().id,
        "1"
    );
}

fn cached(id: &str, fetched_at: u64) -> Cached {
    Cached {
        policy: parse_policy(POLICY).unwrap(),
        id: id.into(),
        fetched_at,
    }
}

#[test]
fn a_cached_policy_holds_while_the_id_is_the_same() {
    let r = StsRecord { id: "1".into() };
    assert_eq!(
        refresh(Some(&cached("1", 100)), Some(&r), 200),
        Refresh::UseCached
    );
    assert_eq!(
        refresh(Some(&cached("0", 100)), Some(&r), 200),
        Refresh::Fetch
    );
}

#[test]
fn a_cached_policy_outlives_a_vanished_record_until_it_expires() {
    assert_eq!(
        refresh(Some(&cached("1", 100)), None, 200),
        Refresh::UseCached
    );
    assert_eq!(
        refresh(Some(&cached("1", 100)), None, 100 + 604_800),
        Refresh::NoPolicy
    );
}

#[test]
fn no_record_and_no_cache_is_no_policy() {
    assert_eq!(refresh(None, None, 0), Refresh::NoPolicy);
    assert_eq!(
        refresh(None, Some(&StsRecord { id: "1".into() }), 0),
        Refresh::Fetch
    );
}

#[test]
fn a_cached_policy_survives_serialization() {
    let c = cached("7", 5);
    let back: Cached = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
}

#[test]
fn a_served_policy_parses_back_and_its_id_follows_its_text() {
    let p = parse_policy(POLICY).unwrap();
    assert_eq!(parse_policy(&p.to_text()).unwrap(), p);
    assert!(parse_record(&format!("v=STSv1; id={}", p.id())).is_ok());
    let testing = Policy {
        mode: Mode::Testing,
        ..p.clone()
    };
    assert_ne!(testing.id(), p.id());
}
