use super::*;
use std::io::Write as _;

const XML: &[u8] = include_bytes!("../testdata/dmarc-aggregate.xml");
const JSON: &[u8] = include_bytes!("../testdata/tlsrpt.json");
const LIMITS: Limits = Limits {
    max_bytes: 10 * 1024 * 1024,
    max_ratio: 100,
};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zip_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    w.start_file(name, opts).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap().into_inner()
}

fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.as_bytes()
        .chunks(76)
        .map(|l| String::from_utf8_lossy(l).into_owned() + "\r\n")
        .collect()
}

/// A report message as reporters send them: a text part and one
/// attachment.
fn message(media: &str, name: &str, data: &[u8]) -> Vec<u8> {
    format!(
        "From: noreply-dmarc@receiver.example\r\nTo: reports@example.com\r\n\
         Subject: Report Domain: example.com\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nThis is an aggregate report.\r\n\
         --b\r\nContent-Type: {media}; name=\"{name}\"\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}--b--\r\n",
        base64(data)
    )
    .into_bytes()
}

fn dmarc(r: Result<Summary, Malformed>) -> DmarcSummary {
    match r {
        Ok(Summary::Dmarc(d)) => d,
        other => panic!("not a DMARC summary: {other:?}"),
    }
}

fn assert_sample_figures(d: &DmarcSummary) {
    assert_eq!(d.org_name, "receiver.example");
    assert_eq!(d.report_id, "9391651994964116463");
    assert_eq!((d.begin, d.end), (1335571200, 1335657599));
    assert_eq!(d.policy.domain, "example.com");
    assert_eq!(d.policy.p, "quarantine");
    assert_eq!((d.messages, d.pass, d.fail), (15, 12, 3));
    assert_eq!(d.rows.len(), 2);
    assert_eq!(d.rows[1].source_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(d.rows[1].disposition, "quarantine");
    assert_eq!(
        (d.rows[1].dkim.as_str(), d.rows[1].spf.as_str()),
        ("fail", "fail")
    );
    assert_eq!(d.rows[0].header_from, "example.com");
}

#[test]
fn plain_xml_attachment_is_a_dmarc_report() {
    let m = message("text/xml", "receiver.example!example.com!1!2.xml", XML);
    assert_sample_figures(&dmarc(read_message(&m, LIMITS)));
}

#[test]
fn gzip_attachment_is_unpacked() {
    let m = message("application/gzip", "r.xml.gz", &gzip(XML));
    assert_sample_figures(&dmarc(read_message(&m, LIMITS)));
}

#[test]
fn zip_attachment_is_unpacked() {
    let m = message("application/zip", "r.zip", &zip_of("r.xml", XML));
    assert_sample_figures(&dmarc(read_message(&m, LIMITS)));
}

#[test]
fn mislabelled_attachment_is_read_by_its_content() {
    let m = message("application/octet-stream", "report", &gzip(XML));
    assert_sample_figures(&dmarc(read_message(&m, LIMITS)));
}

#[test]
fn tlsrpt_json_and_gzip_are_tls_reports() {
    for (media, data) in [
        ("application/tlsrpt+json", JSON.to_vec()),
        ("application/tlsrpt+gzip", gzip(JSON)),
    ] {
        let m = message(media, "company-x!company-y!1!2.json.gz", &data);
        let Ok(Summary::Tls(t)) = read_message(&m, LIMITS) else {
            panic!("{media}: not a TLS report");
        };
        assert_eq!(t.org_name, "Company-X");
        assert_eq!((t.successful, t.failed), (5326, 303));
        assert_eq!(t.begin, 1459468800);
        let p = &t.policies[0];
        assert_eq!(
            (p.policy_type.as_str(), p.policy_domain.as_str()),
            ("sts", "company-y.example")
        );
        assert_eq!(p.failures.len(), 3);
        assert_eq!(p.failures[0].result_type, "certificate-expired");
        assert_eq!(p.failures[1].failed_sessions, 200);
        assert_eq!(p.failures[1].receiving_ip.as_deref(), Some("203.0.113.56"));
    }
}

#[test]
fn zip_bomb_stops_at_the_ratio() {
    let zeros = vec![0u8; 20 * 1024 * 1024];
    let bomb = zip_of("r.xml", &zeros);
    let m = message("application/zip", "r.zip", &bomb);
    match read_message(&m, LIMITS) {
        Err(Malformed::RatioExceeded {
            limit: 100, packed, ..
        }) => assert_eq!(packed, bomb.len()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn gzip_bomb_stops_at_the_ratio_before_the_size_limit() {
    let bomb = gzip(&vec![b' '; 5 * 1024 * 1024]);
    match unpack::unpack(&bomb, LIMITS) {
        Err(e @ Malformed::RatioExceeded { .. }) => assert_eq!(e.code(), "ratio"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn small_compressible_report_passes_under_the_ratio_floor() {
    // 15 kB of XML squeezes far past 100:1 when its records are alike.
    let mut xml = String::from_utf8_lossy(XML).into_owned();
    let record = &xml[xml.find("<record>").unwrap()..xml.find("</record>").unwrap() + 9];
    let more = record.repeat(40);
    xml = xml.replace("</feedback>", &(more + "</feedback>"));
    let packed = gzip(xml.as_bytes());
    assert!(
        xml.len() / packed.len() > 20,
        "{} / {}",
        xml.len(),
        packed.len()
    );
    let tight = Limits {
        max_ratio: 2,
        ..LIMITS
    };
    let d = dmarc(read_message(
        &message("application/gzip", "r.xml.gz", &packed),
        tight,
    ));
    assert_eq!(d.rows.len(), 42);
}

#[test]
fn size_limit_applies_unpacked_and_plain() {
    let small = Limits {
        max_bytes: 1000,
        max_ratio: 1000,
    };
    let m = message("application/gzip", "r.xml.gz", &gzip(XML));
    assert_eq!(
        read_message(&m, small),
        Err(Malformed::TooLarge { limit: 1000 })
    );
    let m = message("text/xml", "r.xml", XML);
    assert_eq!(
        read_message(&m, small),
        Err(Malformed::TooLarge { limit: 1000 })
    );
}

#[test]
fn truncated_gzip_is_malformed_as_truncated() {
    let packed = gzip(XML);
    let cut = &packed[..packed.len() / 2];
    let r = read_message(&message("application/gzip", "r.xml.gz", cut), LIMITS);
    assert!(
        matches!(r, Err(Malformed::Truncated { format: "gzip", .. })),
        "{r:?}"
    );
}

#[test]
fn truncated_zip_is_malformed() {
    let packed = zip_of("r.xml", XML);
    let cut = &packed[..packed.len() / 2];
    let r = read_message(&message("application/zip", "r.zip", cut), LIMITS);
    assert!(
        matches!(r, Err(Malformed::Unpack { format: "zip", .. })),
        "{r:?}"
    );
}

#[test]
fn not_a_report_is_malformed_with_a_reason() {
    let plain = b"From: a@b.example\r\nSubject: hi\r\n\r\nJust a letter.\r\n";
    assert_eq!(read_message(plain, LIMITS), Err(Malformed::NoReport));
    let html = message("application/xml", "r.xml", b"<html><body>hi</body></html>");
    let r = read_message(&html, LIMITS);
    assert!(
        matches!(&r, Err(Malformed::Dmarc(why)) if why.contains("html")),
        "{r:?}"
    );
    let json = message("application/tlsrpt+json", "r.json", b"{\"hello\": 1}");
    let r = read_message(&json, LIMITS);
    assert!(
        matches!(&r, Err(Malformed::Tls(why)) if why.contains("date-range")),
        "{r:?}"
    );
    let text = message("application/octet-stream", "r.bin", b"\x00\x01binary");
    assert_eq!(read_message(&text, LIMITS), Err(Malformed::UnknownFormat));
    assert_eq!(
        read_message(b"", LIMITS).map_err(|e| e.code()),
        Err("not_mail")
    );
}

#[test]
fn rows_beyond_the_cap_count_in_the_totals_only() {
    let mut xml = String::from_utf8_lossy(XML).into_owned();
    let start = xml.find("<record>").unwrap();
    let record = xml[start..xml.find("</record>").unwrap() + 9].to_owned();
    xml = xml.replace(
        "</feedback>",
        &(record.repeat(summary::MAX_ROWS) + "</feedback>"),
    );
    let d = dmarc(parse_payload(xml.as_bytes()));
    assert_eq!(d.rows.len(), summary::MAX_ROWS);
    assert_eq!(d.rows_omitted, 2);
    assert_eq!(d.messages, 15 + 12 * summary::MAX_ROWS as u64);
}

#[test]
fn summaries_round_trip_through_json() {
    let s = parse_payload(XML).unwrap();
    let text = serde_json::to_string(&s).unwrap();
    assert!(text.starts_with("{\"kind\":\"dmarc\""), "{text}");
    assert_eq!(serde_json::from_str::<Summary>(&text).unwrap(), s);
}

// --- ARF feedback reports (RFC 5965) ----------------------------------------

fn arf(message: &[u8]) -> ArfSummary {
    match read_message(message, LIMITS) {
        Ok(Summary::Arf(a)) => a,
        other => panic!("not read as ARF: {other:?}"),
    }
}

#[test]
fn the_rfc_5965_example_is_read_with_its_returned_message_id() {
    let a = arf(include_bytes!("../testdata/arf-rfc5965.eml"));
    assert_eq!(a.feedback_type, "abuse");
    assert_eq!(a.user_agent, "SomeGenerator/1.0");
    assert_eq!(a.version, "1");
    assert_eq!(a.reporter, "abusedesk@example.com");
    assert_eq!(
        a.message_id.as_deref(),
        Some("8787KJKJ3K4J3K4J3K4J3.mail@example.net")
    );
    assert_eq!(a.queue_ids, ["M63d4137594e46"]);
}

#[test]
fn a_yahoo_style_report_names_our_queue_id_and_message_id() {
    let a = arf(include_bytes!("../testdata/arf-yahoo.eml"));
    assert_eq!(a.user_agent, "Yahoo!-Mail-Feedback/2.0");
    assert_eq!(a.original_mail_from.as_deref(), Some("alice@local.test"));
    assert_eq!(a.original_rcpt_to, ["victim@yahoo.test"]);
    assert_eq!(a.queue_ids, ["0001765119480123456"]);
    assert_eq!(
        a.message_id.as_deref(),
        Some("0001765119480123456@mx.portcullis.test")
    );
}

#[test]
fn a_microsoft_style_report_with_headers_only_is_read() {
    let a = arf(include_bytes!("../testdata/arf-microsoft.eml"));
    assert_eq!(a.source_ip.as_deref(), Some("192.0.2.25"));
    assert_eq!(a.reporting_mta.as_deref(), Some("dns; mail.hotmail.test"));
    assert_eq!(a.queue_ids, ["0001765123260000001"]);
    assert_eq!(
        a.message_id.as_deref(),
        Some("CAF=client-chosen-id@laptop.example")
    );
}

#[test]
fn a_feedback_report_without_feedback_type_is_set_aside_with_the_reason() {
    let m = String::from_utf8_lossy(include_bytes!("../testdata/arf-rfc5965.eml"))
        .replace("Feedback-Type: abuse\r\n", "");
    let e = read_message(m.as_bytes(), LIMITS).unwrap_err();
    assert_eq!(e.code(), "bad_arf");
    assert!(e.to_string().contains("Feedback-Type"), "{e}");
}

#[test]
fn a_feedback_report_without_its_machine_part_is_set_aside() {
    let m = String::from_utf8_lossy(include_bytes!("../testdata/arf-rfc5965.eml"))
        .replace("message/feedback-report", "text/plain");
    assert_eq!(
        read_message(m.as_bytes(), LIMITS).unwrap_err().code(),
        "bad_arf"
    );
}
