//! Authentication of mail received on port 25: SPF at MAIL FROM (RFC 7208),
//! DKIM (RFC 6376, 8463), ARC (RFC 8617) and DMARC (RFC 7489) at the end of
//! data, summed up in one Authentication-Results header (RFC 8601).
//!
//! Results only: what to do with a failure is the server's policy.

use crate::SuffixList;
use crate::dmarc::{self, DmarcEvaluation};
pub use crate::result::AuthResult;
use crate::result::spf_result;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, MessageAuthenticator, SpfOutput,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

fn dkim_result(r: &DkimResult) -> AuthResult {
    match r {
        DkimResult::Pass => AuthResult::Pass,
        DkimResult::Neutral(_) => AuthResult::Neutral,
        DkimResult::Fail(_) => AuthResult::Fail,
        DkimResult::PermError(_) => AuthResult::PermError,
        DkimResult::TempError(_) => AuthResult::TempError,
        DkimResult::None => AuthResult::None,
    }
}

/// The SPF result of a transaction, kept from MAIL FROM to end of data.
#[derive(Clone, Debug)]
pub struct SpfCheck {
    pub output: SpfOutput,
    /// The domain's explanation of a fail (RFC 7208 §6.2).
    pub explanation: Option<String>,
    /// Why the result is an error, for logs.
    pub reason: String,
    /// The HELO identity's own result when MAIL FROM was not null
    /// (RFC 7208 §2.3 recommends checking both).
    pub helo_result: Option<SpfOutput>,
    /// The identity checked: the MAIL FROM address, or `postmaster@HELO`
    /// for the null sender (RFC 7208 §2.4).
    pub identity: String,
    pub helo: String,
    pub ip: IpAddr,
}

impl SpfCheck {
    pub fn result(&self) -> AuthResult {
        self.output.result().into()
    }

    pub fn domain(&self) -> &str {
        self.output.domain()
    }
}

/// What the DMARC policy of the From: domain asks for, when DMARC failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

impl DmarcPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

/// Everything the policy needs to decide, and the header to prepend.
#[derive(Clone, Debug)]
pub struct MessageResults {
    pub spf: AuthResult,
    /// Best DKIM result over all signatures: pass if any passes.
    pub dkim: AuthResult,
    /// `d=` of every passing signature.
    pub dkim_domains: Vec<String>,
    pub arc: AuthResult,
    /// `d=` of the newest ARC-Seal when the chain passed: who vouches for
    /// the results it carries (trusted sealers may override DMARC).
    pub arc_sealer: Option<String>,
    pub dmarc: AuthResult,
    pub dmarc_policy: DmarcPolicy,
    pub from_domain: String,
    /// The message's row for the From: domain's aggregate report, when
    /// the domain asks for reports (RFC 7489 §7.2).
    pub dmarc_observation: Option<portcullis_dmarcrpt::Observation>,
    /// `Authentication-Results: ...\r\n`.
    pub header: String,
}

/// The DNS-backed verifier.
#[derive(Clone)]
pub struct Verifier {
    pub(crate) auth: MessageAuthenticator,
    authserv_id: String,
    /// DMARCbis discovery (mail-auth) instead of RFC 7489 with the PSL.
    pub(crate) dmarc_tree_walk: bool,
    psl: Arc<SuffixList>,
    /// TXT records given up front instead of DNS ([`Verifier::offline`]).
    pub(crate) offline: crate::offline::Preloaded,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the DNS resolver: {0}")]
pub struct ResolverError(pub(crate) String);

impl Verifier {
    /// `nameservers` empty: the system resolver (/etc/resolv.conf).
    pub fn new(
        authserv_id: &str,
        nameservers: &[SocketAddr],
        timeout: Duration,
    ) -> Result<Verifier, ResolverError> {
        // Authentication answers come from DNS, never from /etc/hosts
        // (which would make 127.0.0.1 "localhost" or the machine's name):
        // portcullis_dns's options say so.
        let auth = if nameservers.is_empty() {
            MessageAuthenticator::new_system_conf()
        } else {
            MessageAuthenticator::new(
                portcullis_dns::resolver_config(nameservers),
                portcullis_dns::resolver_opts(timeout),
            )
        }
        .map_err(|e| ResolverError(e.to_string()))?;
        Ok(Verifier::from_authenticator(auth, authserv_id))
    }

    pub(crate) fn from_authenticator(auth: MessageAuthenticator, authserv_id: &str) -> Verifier {
        Verifier {
            auth,
            authserv_id: authserv_id.to_owned(),
            dmarc_tree_walk: false,
            psl: SuffixList::built_in(),
            offline: Default::default(),
        }
    }

    /// How DMARC finds the organizational domain: `psl` (RFC 7489, this
    /// list) unless `tree_walk` (DMARCbis).
    pub fn with_dmarc(mut self, tree_walk: bool, psl: Arc<SuffixList>) -> Verifier {
        self.dmarc_tree_walk = tree_walk;
        self.psl = psl;
        self
    }

    /// RFC 7489 DMARC for `from_domain`, a random draw for `pct`.
    pub(crate) async fn dmarc_psl(
        &self,
        from_domain: &str,
        ids: &dmarc::Identifiers<'_>,
    ) -> DmarcEvaluation {
        let sample = (rand_core::RngCore::next_u32(&mut rand_core::OsRng) % 100) as u8;
        dmarc::check(&self.dns(), from_domain, ids, &self.psl, sample).await
    }

    pub fn authserv_id(&self) -> &str {
        &self.authserv_id
    }

    /// SPF for MAIL FROM, or for the HELO identity when the sender is null,
    /// by our own evaluator (crate::spf). `now` feeds the `t` macro.
    pub async fn spf(&self, ip: IpAddr, helo: &str, sender: Option<&str>, now: u64) -> SpfCheck {
        let query = crate::spf::SpfQuery {
            ip,
            helo,
            mail_from: sender,
            receiver: &self.authserv_id,
            now,
        };
        let verdict = crate::spf::check_host(&self.dns(), &query).await;
        let output = SpfOutput::new(verdict.domain.clone()).with_result(spf_result(verdict.result));
        let identity = sender
            .filter(|s| !s.is_empty())
            .map_or_else(|| format!("postmaster@{helo}"), str::to_owned);
        SpfCheck {
            output,
            explanation: verdict.explanation,
            reason: verdict.reason,
            helo_result: None,
            identity,
            helo: helo.to_owned(),
            ip,
        }
    }

    /// RFC 7208 §2.3: the HELO identity checked on its own too, for the
    /// record (`spf=... smtp.helo=`); None when the HELO is no domain
    /// name. Its result is the same for every transaction of a
    /// connection, so the caller keeps it (`SpfCheck::helo_result`).
    pub async fn helo_check(&self, ip: IpAddr, helo: &str, now: u64) -> Option<SpfOutput> {
        if !crate::spf::eval::is_valid_domain(helo) {
            return None;
        }
        Some(self.spf(ip, helo, None, now).await.output)
    }

    /// DKIM, ARC and DMARC over the message as received.
    /// The ARC set (AAR, AMS, AS; RFC 8617) to prepend to a message we
    /// forward: our results on arrival, sealed with `domain`'s key. Err
    /// when the chain it arrived with failed (it must not be sealed) or
    /// the domain has no RSA key.
    pub async fn arc_seal(
        &self,
        message: &[u8],
        spf: &SpfCheck,
        keys: &crate::DkimKeys,
        domain: &str,
    ) -> Result<String, String> {
        let sealer = keys.arc_sealer(domain).ok_or_else(|| {
            format!("no RSA key for {domain} to seal with (portcullis dkim keygen)")
        })?;
        let parsed = AuthenticatedMessage::parse_with_opts(message, None, false)
            .ok_or("the message cannot be parsed")?;
        let dkim = self.auth.verify_dkim(self.lookups(&parsed)).await;
        let arc = self.auth.verify_arc(self.lookups(&parsed)).await;
        let from = parsed.from.first().cloned().unwrap_or_default();
        let results = AuthenticationResults::new(&self.authserv_id)
            .with_dkim_results(&dkim, &from)
            .with_spf_mailfrom_result(&spf.output, spf.ip, &spf.identity, &spf.helo);
        let results = with_helo_result(results, spf).with_arc_result(&arc, spf.ip);
        let set = sealer
            .seal(&parsed, &results, &arc)
            .map_err(|e| e.to_string())?;
        Ok(set.to_header())
    }

    pub async fn check_message(&self, message: &[u8], spf: &SpfCheck) -> MessageResults {
        // Not strict: a signature with l= is verified over its length (RFC
        // 6376 §3.5), as dkimpy and OpenDKIM do, instead of being set aside
        // as neutral. Text appended past l= is unsigned either way, and the
        // header says so no worse than the signer chose.
        let Some(parsed) = AuthenticatedMessage::parse_with_opts(message, None, false) else {
            return self.unparsable(spf);
        };
        let dkim = self.auth.verify_dkim(self.lookups(&parsed)).await;
        let not_for_email = self.keys_not_for_email(&dkim).await;
        let arc = self.auth.verify_arc(self.lookups(&parsed)).await;
        let results: Vec<AuthResult> = dkim
            .iter()
            .enumerate()
            .map(|(i, d)| match not_for_email.iter().any(|(j, _)| *j == i) {
                true => AuthResult::PermError,
                false => dkim_result(d.result()),
            })
            .collect();
        let dkim_domains = dkim
            .iter()
            .zip(&results)
            .filter(|(_, r)| **r == AuthResult::Pass)
            .filter_map(|(d, _)| d.signature().map(|s| s.d.to_ascii_lowercase()))
            .collect();
        let from = parsed.from.first().cloned().unwrap_or_default();
        let from_domain = single_from_domain(&parsed);
        let dmarc = self
            .dmarc_for(&parsed, &dkim, &results, spf, &from_domain)
            .await;
        let signatures: dmarc::Signatures = dkim
            .iter()
            .zip(&results)
            .filter_map(|(d, r)| d.signature().map(|s| (s.d.clone(), s.s.clone(), *r)))
            .collect();
        let dmarc_observation = dmarc::observation(&dmarc, spf, &from_domain, &signatures);
        let ar = AuthenticationResults::new(&self.authserv_id)
            .with_dkim_results(&dkim, &from)
            .with_spf_mailfrom_result(&spf.output, spf.ip, &spf.identity, &spf.helo);
        let mut header = with_helo_result(ar, spf)
            .with_arc_result(&arc, spf.ip)
            .to_header();
        if dkim.is_empty() {
            // RFC 8601 §2.7.1: say "none" rather than leave DKIM out.
            header = header.replacen(";\r\n\tspf=", ";\r\n\tdkim=none;\r\n\tspf=", 1);
        }
        for (i, service) in &not_for_email {
            if let Some(sig) = dkim[*i].signature() {
                let id = if sig.i.is_empty() {
                    format!("header.d={}", sig.d)
                } else {
                    format!("header.i={}", sig.i)
                };
                header = header.replacen(
                    &format!("dkim=pass {id} header.s={}", sig.s),
                    &format!("dkim=permerror (key record is for service {service}, not email) {id} header.s={}", sig.s),
                    1,
                );
            }
        }
        if !from_domain.is_empty() {
            let piece = format!(
                "dmarc={} header.from={from_domain} policy.dmarc={}",
                dmarc.dmarc.as_str(),
                dmarc.policy.as_str()
            );
            header = append_result(&header, &piece);
        }
        let arc_sealer = (dkim_result(arc.result()) == AuthResult::Pass)
            .then(|| {
                parsed
                    .as_headers
                    .iter()
                    .max_by_key(|h| h.header.i)
                    .map(|h| h.header.d.to_ascii_lowercase())
            })
            .flatten();
        MessageResults {
            arc_sealer,
            spf: spf.result(),
            dkim: best(&results),
            dkim_domains,
            arc: dkim_result(arc.result()),
            dmarc: dmarc.dmarc,
            dmarc_policy: dmarc.disposition,
            from_domain,
            dmarc_observation,
            header,
        }
    }

    /// DMARC by the configured discovery: RFC 7489 with the PSL, or
    /// mail-auth's DMARCbis tree walk.
    async fn dmarc_for(
        &self,
        parsed: &AuthenticatedMessage<'_>,
        dkim: &[mail_auth::DkimOutput<'_>],
        results: &[AuthResult],
        spf: &SpfCheck,
        from_domain: &str,
    ) -> DmarcEvaluation {
        let mail_from_domain = spf
            .identity
            .rsplit_once('@')
            .map_or(spf.helo.as_str(), |(_, d)| d);
        if self.dmarc_tree_walk {
            let out = self
                .auth
                .verify_dmarc(self.lookups(DmarcParameters::new(
                    parsed,
                    dkim,
                    mail_from_domain,
                    &spf.output,
                )))
                .await;
            return dmarc::from_output(&out);
        }
        let signed: Vec<(AuthResult, String)> = dkim
            .iter()
            .zip(results)
            .filter_map(|(d, r)| d.signature().map(|s| (*r, s.d.clone())))
            .collect();
        let ids = dmarc::Identifiers {
            spf: spf.result(),
            spf_domain: mail_from_domain,
            dkim: &signed,
        };
        self.dmarc_psl(from_domain, &ids).await
    }

    /// RFC 6376 §3.6.1: a key record whose `s=` names neither `email` nor
    /// `*` must not verify mail. mail-auth does not look at `s=`, so check
    /// the passing signatures' records here. Returns (index, service).
    async fn keys_not_for_email(&self, dkim: &[mail_auth::DkimOutput<'_>]) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, d) in dkim.iter().enumerate() {
            let Some(sig) = d.signature().filter(|_| d.result() == &DkimResult::Pass) else {
                continue;
            };
            let name = format!("{}._domainkey.{}.", sig.s, sig.d);
            let Ok(raw) = self.txt_raw(&name).await else {
                continue;
            };
            let text = String::from_utf8_lossy(&raw);
            let service = text
                .split(';')
                .filter_map(|t| t.split_once('='))
                .find(|(k, _)| k.trim() == "s")
                .map(|(_, v)| v.trim().to_owned());
            if let Some(service) = service
                && !service
                    .split(':')
                    .any(|s| matches!(s.trim(), "email" | "*"))
            {
                out.push((i, service));
            }
        }
        out
    }

    fn unparsable(&self, spf: &SpfCheck) -> MessageResults {
        MessageResults {
            spf: spf.result(),
            dkim: AuthResult::PermError,
            dkim_domains: Vec::new(),
            arc: AuthResult::None,
            arc_sealer: None,
            dmarc: AuthResult::PermError,
            dmarc_policy: DmarcPolicy::None,
            from_domain: String::new(),
            dmarc_observation: None,
            header: format!(
                "Authentication-Results: {}; spf={} smtp.mailfrom={}; dkim=permerror (unparsable message)\r\n",
                self.authserv_id,
                spf.result().as_str(),
                spf.identity
            ),
        }
    }
}

/// The HELO identity's SPF result beside MAIL FROM's, when it was checked.
fn with_helo_result<'a>(
    results: AuthenticationResults<'a>,
    spf: &SpfCheck,
) -> AuthenticationResults<'a> {
    match &spf.helo_result {
        Some(helo) => results.with_spf_ehlo_result(helo, spf.ip, &spf.helo),
        None => results,
    }
}

/// One more method's result at the end of an Authentication-Results
/// field built by mail-auth (it ends with CRLF).
fn append_result(header: &str, piece: &str) -> String {
    format!("{};\r\n\t{piece}\r\n", header.trim_end())
}

impl MessageResults {
    /// Add the connection's reverse-DNS result (RFC 8601 §2.7.3 `iprev`).
    pub fn add_iprev(&mut self, result: AuthResult, ip: IpAddr) {
        let piece = format!("iprev={} policy.iprev={ip}", result.as_str());
        self.header = append_result(&self.header, &piece);
    }
}

/// The From: domain, lower-cased; empty when there is none or the field
/// names several domains (RFC 7489 §6.6.1: such mail is not judged).
fn single_from_domain(parsed: &AuthenticatedMessage<'_>) -> String {
    let mut domains = parsed
        .from
        .iter()
        .filter_map(|a| a.rsplit_once('@'))
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase());
    let first = domains.next().unwrap_or_default();
    if domains.all(|d| d == first) {
        first
    } else {
        String::new()
    }
}

/// Pass if any passed; otherwise a temporary error if any had one (a
/// retry may pass); otherwise the first result; none when unsigned.
fn best(results: &[AuthResult]) -> AuthResult {
    if results.contains(&AuthResult::Pass) {
        AuthResult::Pass
    } else if results.contains(&AuthResult::TempError) {
        AuthResult::TempError
    } else {
        results.first().copied().unwrap_or(AuthResult::None)
    }
}

/// Remove every Authentication-Results header field that claims our
/// authserv-id (RFC 8601 §5): only we may say what we verified.
pub fn strip_forged_results(message: &[u8], authserv_id: &str) -> Vec<u8> {
    let header_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |i| i + 2);
    let mut out = Vec::with_capacity(message.len());
    let mut i = 0;
    while i < header_end {
        // One field: this line plus its continuation lines.
        let mut j = i;
        loop {
            let eol = message[j..header_end]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(header_end, |p| j + p + 2);
            j = eol;
            if j >= header_end || !matches!(message[j], b' ' | b'\t') {
                break;
            }
        }
        let field = &message[i..j];
        if !claims(field, authserv_id) {
            out.extend_from_slice(field);
        }
        i = j;
    }
    out.extend_from_slice(&message[header_end.min(message.len())..]);
    out
}

fn claims(field: &[u8], authserv_id: &str) -> bool {
    let name = b"authentication-results:";
    if field.len() < name.len() || !field[..name.len()].eq_ignore_ascii_case(name) {
        return false;
    }
    let value = String::from_utf8_lossy(&field[name.len()..]);
    let id = value
        .trim_start()
        .split([';', ' ', '\t', '\r', '\n'])
        .next()
        .unwrap_or("");
    id.eq_ignore_ascii_case(authserv_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_results_claiming_our_id() {
        let msg = b"Received: x\r\nAuthentication-Results: mx.test; spf=pass\r\n\tsmtp.mailfrom=a@b\r\nauthentication-results: MX.TEST;dkim=pass\r\nAuthentication-Results: other.test; spf=fail\r\nSubject: s\r\n\r\nAuthentication-Results: mx.test; body stays\r\n";
        let out = String::from_utf8(strip_forged_results(msg, "mx.test")).unwrap();
        assert_eq!(
            out,
            "Received: x\r\nAuthentication-Results: other.test; spf=fail\r\nSubject: s\r\n\r\nAuthentication-Results: mx.test; body stays\r\n"
        );
    }

    #[test]
    fn best_dkim_result() {
        use AuthResult::*;
        assert_eq!(best(&[Fail, Pass]), Pass);
        assert_eq!(best(&[Fail, TempError]), TempError);
        assert_eq!(best(&[]), None);
        assert_eq!(best(&[PermError, Fail]), PermError);
    }
}
