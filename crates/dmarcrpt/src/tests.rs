//! Each test is one behaviour of the aggregate report logic.

use super::*;

fn observation(domain: &str, ip: &str, spf_aligned: bool) -> Observation {
    Observation {
        published: Published {
            domain: domain.into(),
            adkim: "r".into(),
            aspf: "r".into(),
            p: "none".into(),
            sp: "none".into(),
            pct: 100,
            fo: "0".into(),
            rua: vec![format!("mailto:dmarc@{domain}")],
        },
        row: Row {
            source_ip: ip.into(),
            header_from: domain.into(),
            envelope_from: domain.into(),
            disposition: "none".into(),
            dkim_aligned: false,
            spf_aligned,
            sampled_out: false,
            dkim: vec![],
            spf_domain: domain.into(),
            spf_scope: "mfrom".into(),
            spf_result: if spf_aligned { "pass" } else { "fail" }.into(),
        },
    }
}

fn period(obs: &[Observation]) -> Period {
    let mut p = Period::default();
    for o in obs {
        p.add(o);
    }
    p
}

#[test]
fn alike_messages_share_one_row() {
    let o = observation("a.test", "192.0.2.1", true);
    let p = period(&[
        o.clone(),
        o.clone(),
        observation("a.test", "192.0.2.2", true),
    ]);
    let d = &p.domains["a.test"];
    assert_eq!((d.rows.len(), d.messages()), (2, 3));
}

#[test]
fn domains_whose_mail_was_never_identified_get_no_report() {
    let p = period(&[observation("forged.test", "192.0.2.1", false)]);
    let plan = plan(&p, &[], 10, &Ledger::default(), 1);
    assert!(plan.send.is_empty());
    assert_eq!(plan.skipped[0].0, "forged.test");
}

#[test]
fn one_identified_message_reports_the_domains_failures_too() {
    let p = period(&[
        observation("a.test", "192.0.2.1", true),
        observation("a.test", "198.51.100.7", false),
    ]);
    assert_eq!(plan(&p, &[], 10, &Ledger::default(), 1).send, ["a.test"]);
    assert_eq!(p.domains["a.test"].rows.len(), 2);
}

#[test]
fn excluded_domains_and_their_subdomains_get_no_report() {
    let p = period(&[
        observation("spam.test", "192.0.2.1", true),
        observation("mail.spam.test", "192.0.2.1", true),
        observation("ok.test", "192.0.2.1", true),
    ]);
    let plan = plan(&p, &["spam.test".into()], 10, &Ledger::default(), 1);
    assert_eq!(plan.send, ["ok.test"]);
}

#[test]
fn a_domain_gets_at_most_one_report_a_day() {
    let p = period(&[observation("a.test", "192.0.2.1", true)]);
    let mut ledger = Ledger::default();
    ledger.sent("a.test", 20_000);
    assert!(plan(&p, &[], 10, &ledger, 20_000).send.is_empty());
    assert_eq!(plan(&p, &[], 10, &ledger, 20_001).send, ["a.test"]);
}

#[test]
fn no_more_than_the_cap_leave_in_one_run() {
    let obs: Vec<_> = (0..50)
        .map(|i| observation(&format!("d{i}.test"), "192.0.2.1", true))
        .collect();
    let plan = plan(&period(&obs), &[], 3, &Ledger::default(), 1);
    assert_eq!((plan.send.len(), plan.skipped.len()), (3, 47));
}

#[test]
fn destination_parses_size_limits_and_refuses_other_schemes() {
    let d = Destination::parse("mailto:Reports@Example.TEST!10m").unwrap();
    assert_eq!(
        (d.address.as_str(), d.max_size),
        ("Reports@example.test", Some(10 << 20))
    );
    assert_eq!(Destination::parse("https://example.test/report"), None);
    assert_eq!(Destination::parse("mailto:"), None);
}

#[test]
fn destination_outside_the_organizational_domain_needs_confirmation() {
    let org = |d: &str| d.rsplitn(3, '.').take(2).collect::<Vec<_>>().join(".");
    let inside = Destination::parse("mailto:r@mail.a.test").unwrap();
    assert_eq!(inside.external_check("a.test", org), None);
    let outside = Destination::parse("mailto:r@vendor.test").unwrap();
    assert_eq!(
        outside.external_check("a.test", org).as_deref(),
        Some("a.test._report._dmarc.vendor.test")
    );
    assert!(confirms_external(&["v=DMARC1".into()]));
    assert!(!confirms_external(&["v=spf1 -all".into()]));
}

#[test]
fn xml_follows_appendix_c_order_and_escapes_values() {
    let mut o = observation("a.test", "2001:db8::1", true);
    o.row.header_from = "a.test<&>".into();
    let p = period(&[o]);
    let who = Reporter {
        org_name: "mx.example.test",
        email: "noreply-dmarc@mx.example.test",
        report_id: "r1",
        begin: 1,
        end: 2,
    };
    let x = xml(&who, &p.domains["a.test"]);
    let order = [
        "<version>",
        "<report_metadata>",
        "<policy_published>",
        "<pct>",
        "<fo>",
        "<record>",
    ];
    let at: Vec<usize> = order.iter().map(|t| x.find(t).unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{x}");
    assert!(x.contains("<header_from>a.test&lt;&amp;&gt;</header_from>"));
    assert!(x.contains("<source_ip>2001:db8:0:0:0:0:0:1</source_ip>"));
}

#[test]
fn a_period_survives_a_round_trip_through_json() {
    let p = period(&[observation("a.test", "192.0.2.1", true)]);
    let back: Period = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
}

#[test]
fn rotating_addresses_cannot_grow_a_domains_rows_without_bound() {
    let mut p = Period::default();
    for i in 0..(MAX_ROWS + 50) {
        p.add(&observation("a.test", &format!("2001:db8::{i:x}"), true));
    }
    assert_eq!(p.domains["a.test"].rows.len(), MAX_ROWS);
    assert_eq!(p.dropped, 50);
    assert!(
        p.add(&observation("a.test", "2001:db8::1", true)),
        "a known row still counts"
    );
}

#[test]
fn merged_periods_add_up_rows_as_one_node_would_have() {
    let a = observation("example.test", "192.0.2.1", true);
    let b = observation("example.test", "192.0.2.2", false);
    let mut one = period(&[a.clone(), b.clone()]);
    one.merge(period(&[
        a.clone(),
        observation("other.test", "192.0.2.3", false),
    ]));
    assert_eq!(
        one,
        period(&[
            a.clone(),
            b,
            a,
            observation("other.test", "192.0.2.3", false)
        ])
    );
}

#[test]
fn a_merge_past_the_row_bound_counts_the_excess_as_dropped() {
    let mut full = Period::default();
    for i in 0..MAX_ROWS {
        full.add(&observation(
            "example.test",
            &format!("10.0.{}.{}", i / 256, i % 256),
            false,
        ));
    }
    full.merge(period(&[observation("example.test", "192.0.2.9", false)]));
    assert_eq!(full.domains["example.test"].rows.len(), MAX_ROWS);
    assert_eq!(full.dropped, 1);
}
