//! `dns-records`, `dkim keygen`, `spf` and `dmarc`: what to publish in
//! DNS, and diagnostics that run the server's own SPF and DMARC code with
//! its resolver. Nothing here changes the server's state beyond writing a
//! new DKIM key.

use crate::{KeyAlgorithm, ResolverArgs, load};
use portcullis_config::Config;

/// What an operator publishes so that others can find, trust and reach
/// this server for `domain`.
pub fn dns_records(config: &Config, domain: &str) -> anyhow::Result<()> {
    use portcullis_config::ListenerRole;
    let host = &config.hostname;
    let port = |role| config.listener_addr(role).map(|a| a.port());
    println!("; DNS records for {domain} served by {host}");
    println!("{domain}. IN MX 10 {host}.");
    // The slides' advice: start with ~all (softfail), so that forwarded
    // mail is labelled, not lost, and bounces to forged senders can be
    // suppressed; tighten to -all when confident.
    println!("{domain}. IN TXT \"v=spf1 mx ~all\"");
    let dkim = portcullis_authn::published_records(&config.data_dir.join("dkim"), domain)?;
    if dkim.is_empty() {
        println!("; no DKIM key yet: portcullis dkim keygen --domain {domain} --selector s1");
    }
    for r in dkim {
        println!("{r}");
    }
    println!("_dmarc.{domain}. IN TXT \"v=DMARC1; p=none; rua=mailto:postmaster@{domain}\"");
    transport_security(config, domain);
    // RFC 6186: mail clients find the submission service by SRV; 465 first
    // (RFC 8314 prefers implicit TLS).
    if let Some(p) = port(ListenerRole::Submissions) {
        println!("_submissions._tcp.{domain}. IN SRV 0 1 {p} {host}.");
    }
    if let Some(p) = port(ListenerRole::Submission) {
        println!("_submission._tcp.{domain}. IN SRV 10 1 {p} {host}.");
    }
    // And the mailbox server of [autoconfig] (IMAP, POP3), by the same RFC.
    for r in portcullis_server::srv_records(config, domain) {
        println!("{r}");
    }
    Ok(())
}

/// MTA-STS (RFC 8461: the policy's TXT record with the id of what we
/// serve, the policy host), TLS-RPT (RFC 8460) and the DANE-EE TLSA
/// record of our certificate (RFC 7672).
fn transport_security(config: &Config, domain: &str) {
    let host = &config.hostname;
    match config.mta_sts.get(&domain.to_ascii_lowercase()) {
        Some(p) => {
            println!("_mta-sts.{domain}. IN TXT \"v=STSv1; id={}\"", p.id());
            println!("mta-sts.{domain}. IN CNAME {host}.");
            if config.mta_sts_bind.is_none() {
                println!("; [http] mta_sts_bind is not set: nothing serves the policy yet");
            }
        }
        None => println!("; no MTA-STS policy: [[domain]] mta_sts = \"testing\" or \"enforce\""),
    }
    println!("_smtp._tls.{domain}. IN TXT \"v=TLSRPTv1; rua=mailto:postmaster@{domain}\"");
    let (cert, _) = portcullis_server::certificate_paths(config);
    let tlsa = std::fs::read(&cert).ok().and_then(|pem| {
        use rustls::pki_types::{CertificateDer, pem::PemObject as _};
        let first = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
        portcullis_delivery::client::tlsa_spki_sha256(&first)
    });
    match tlsa {
        // DANE-EE, SPKI, SHA-256: survives renewals that keep the key.
        Some(hex) => println!("_25._tcp.{host}. IN TLSA 3 1 1 {hex}"),
        None => println!(
            "; no certificate at {} yet for a TLSA record",
            cert.display()
        ),
    }
}

pub fn dkim_keygen(
    c: &Config,
    domain: &str,
    selector: &str,
    algorithm: KeyAlgorithm,
) -> anyhow::Result<()> {
    let alg = dkim_algorithm(algorithm);
    let dir = c.data_dir.join("dkim");
    let record = portcullis_authn::generate_key(&dir, domain, selector, alg)?;
    crate::settle::settle(c, portcullis_control::LiveFile::DkimKeys, &[dir])?;
    println!("{record}");
    Ok(())
}

pub fn spf(
    ip: std::net::IpAddr,
    helo: String,
    mail_from: Option<String>,
    resolver: ResolverArgs,
) -> anyhow::Result<()> {
    let verifier = diagnostic_verifier(resolver)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let check = rt.block_on(
        verifier.spf(
            ip,
            &helo,
            mail_from.as_deref().filter(|m| !m.is_empty()),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        ),
    );
    println!("{}", check.result().as_str());
    if !check.reason.is_empty() {
        eprintln!("reason: {}", check.reason);
    }
    if let Some(exp) = &check.explanation {
        println!("explanation: {exp}");
    }
    Ok(())
}

pub fn dmarc(
    from: Option<String>,
    spf: String,
    dkim: Option<String>,
    record: Option<String>,
    org_domain: Vec<String>,
    resolver: ResolverArgs,
) -> anyhow::Result<()> {
    if let Some(r) = record {
        let d = portcullis_authn::parse_dmarc_record(&r)
            .map_err(|e| anyhow::anyhow!("invalid record: {e}"))?;
        println!(
            "p={} sp={} adkim={} aspf={} pct={}",
            d.p.as_str(),
            d.sp.as_str(),
            d.adkim.as_str(),
            d.aspf.as_str(),
            d.pct
        );
        return Ok(());
    }
    if !org_domain.is_empty() {
        let list = portcullis_authn::SuffixList::built_in();
        for name in &org_domain {
            let org = list.organizational_domain(name);
            println!("{name} {}", org.as_deref().unwrap_or("null"));
        }
        return Ok(());
    }
    let verifier = diagnostic_verifier(resolver)?;
    let mechanism = |s: &str| {
        let (result, domain) = s.split_once(':').unwrap_or((s, ""));
        portcullis_authn::Mechanism {
            result: result.to_ascii_lowercase(),
            domain: domain.to_owned(),
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dkim = dkim.as_deref().map(mechanism);
    let e = rt
        .block_on(verifier.evaluate_dmarc(
            from.as_deref().unwrap_or(""),
            &mechanism(&spf),
            dkim.as_ref(),
        ))
        .map_err(anyhow::Error::msg)?;
    println!(
        "dmarc={} dkim_aligned={} spf_aligned={} policy={} record={}",
        e.dmarc.as_str(),
        e.dkim_aligned.as_str(),
        e.spf_aligned.as_str(),
        e.policy.as_str(),
        if e.record_found { "found" } else { "absent" }
    );
    Ok(())
}

/// The server's own resolver and checks for `spf` and `dmarc`: the
/// config's name servers unless `--dns` names others.
fn diagnostic_verifier(r: ResolverArgs) -> anyhow::Result<portcullis_authn::Verifier> {
    let c = load(r.config.as_deref())?;
    let servers = if r.dns.is_empty() {
        c.dns_nameservers.clone()
    } else {
        r.dns
    };
    let timeout = std::time::Duration::from_millis(r.dns_timeout_ms);
    portcullis_server::verifier(&c, &servers, timeout)
}

/// `portcullis mta-sts DOMAIN`: the policy delivery would use, fetched now.
pub fn mta_sts(c: &Config, domain: &str) -> anyhow::Result<()> {
    let extra: Vec<_> = c.delivery.mta_sts_ca.iter().cloned().collect();
    let scratch = std::env::temp_dir().join(format!("portcullis-mta-sts-{}", std::process::id()));
    let sts = portcullis_delivery::MtaSts::new(
        &c.dns_nameservers,
        c.dns_timeout,
        &extra,
        scratch,
        std::time::Duration::from_secs(c.delivery.mta_sts_timeout_secs),
    )
    .map_err(|e| anyhow::anyhow!("[delivery] mta_sts_ca: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(sts.query(domain)) {
        Ok(Some((id, p))) => {
            println!(
                "valid id={id} mode={} max_age={} mx={}",
                p.mode.name(),
                p.max_age,
                p.mx.join(",")
            );
            Ok(())
        }
        Ok(None) => {
            println!("none");
            Ok(())
        }
        Err(e) => {
            println!("fetch-error {e}");
            anyhow::bail!("no usable MTA-STS policy for {domain}: {e}")
        }
    }
}

fn dkim_algorithm(a: KeyAlgorithm) -> portcullis_authn::DkimAlgorithm {
    match a {
        KeyAlgorithm::Ed25519 => portcullis_authn::DkimAlgorithm::Ed25519,
        KeyAlgorithm::Rsa => portcullis_authn::DkimAlgorithm::Rsa,
    }
}

/// `dkim rotate`: a pending key and the record to publish for it.
pub fn dkim_rotate(
    c: &Config,
    domain: &str,
    selector: &str,
    algorithm: KeyAlgorithm,
) -> anyhow::Result<()> {
    let dir = c.data_dir.join("dkim");
    let record = portcullis_authn::rotate_key(&dir, domain, selector, dkim_algorithm(algorithm))?;
    crate::settle::settle(c, portcullis_control::LiveFile::DkimKeys, &[dir])?;
    println!("{record}");
    println!(
        "; publish this record, then: portcullis dkim activate --domain {domain} --selector {selector}"
    );
    Ok(())
}

/// `dkim activate`: DNS must serve the pending key's record (through the
/// config's resolvers) before signing switches to it.
pub fn dkim_activate(c: &Config, domain: &str, selector: &str) -> anyhow::Result<()> {
    let dir = c.data_dir.join("dkim");
    let want = portcullis_authn::pending_public_key(&dir, domain, selector)?;
    let name = format!("{selector}._domainkey.{domain}.");
    let served = served_txt(c, &name)?;
    let published = portcullis_authn::record_carries_key(&served, &want);
    if !published {
        anyhow::bail!(
            "DNS does not serve the new key at {name} yet (found {} TXT record(s)): signing stays with the current key",
            served.len()
        );
    }
    let retired = portcullis_authn::activate(&dir, domain, selector)?;
    crate::settle::settle(c, portcullis_control::LiveFile::DkimKeys, &[dir])?;
    println!(
        "{domain} now signs with {selector}; retired: {}",
        if retired.is_empty() {
            "none".into()
        } else {
            retired.join(", ")
        }
    );
    Ok(())
}

/// `dkim retire`: retired keys past their grace period are deleted.
pub fn dkim_retire(c: &Config, domain: &str, grace_days: u64) -> anyhow::Result<()> {
    let dir = c.data_dir.join("dkim");
    let grace = std::time::Duration::from_secs(grace_days.saturating_mul(86_400));
    let removed = portcullis_authn::retire(&dir, domain, grace)?;
    crate::settle::settle(c, portcullis_control::LiveFile::DkimKeys, &[dir])?;
    if removed.is_empty() {
        println!("no key of {domain} was retired {grace_days} day(s) ago or more");
    } else {
        println!(
            "removed {}: take their records out of DNS",
            removed.join(", ")
        );
    }
    Ok(())
}

/// The TXT strings at `name`, each record's strings joined.
fn served_txt(c: &Config, name: &str) -> anyhow::Result<Vec<String>> {
    let resolver = portcullis_dns::resolver(&c.dns_nameservers, c.dns_timeout)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(portcullis_dns::txt_records(&resolver, name)))
}
