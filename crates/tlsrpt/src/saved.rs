//! A period's counts as a file holds them, so that TLS-RPT counts outlive
//! a restart as DMARC report rows do. The saved form spells policy types
//! and result types by their RFC 8460 names.

use crate::{Counts, Failure, PolicyCounts, PolicyKey};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
pub struct SavedPolicy {
    policy_type: String,
    policy_domain: String,
    policy_string: Vec<String>,
    successful: u64,
    failed: u64,
    mx_hosts: Vec<String>,
    failures: Vec<SavedFailure>,
}

#[derive(Clone, Serialize, Deserialize)]
struct SavedFailure {
    result_type: String,
    mx: String,
    sessions: u64,
}

impl From<Counts> for Vec<SavedPolicy> {
    fn from(c: Counts) -> Self {
        c.by_policy
            .into_iter()
            .map(|(k, c)| SavedPolicy {
                policy_type: k.policy_type.to_owned(),
                policy_domain: k.policy_domain,
                policy_string: k.policy_string,
                successful: c.successful,
                failed: c.failed,
                mx_hosts: c.mx_hosts,
                failures: c
                    .failures
                    .into_iter()
                    .map(|((why, mx), sessions)| SavedFailure {
                        result_type: why.name().to_owned(),
                        mx,
                        sessions,
                    })
                    .collect(),
            })
            .collect()
    }
}

impl From<Vec<SavedPolicy>> for Counts {
    /// Entries this version does not know (a policy or result type a
    /// later one added) are left out rather than refusing the file.
    fn from(saved: Vec<SavedPolicy>) -> Self {
        let mut counts = Counts::default();
        for p in saved {
            let Some(policy_type) = policy_type(&p.policy_type) else {
                continue;
            };
            let key = PolicyKey {
                policy_type,
                policy_domain: p.policy_domain,
                policy_string: p.policy_string,
            };
            let failures = p
                .failures
                .into_iter()
                .filter_map(|f| Some(((Failure::from_name(&f.result_type)?, f.mx), f.sessions)))
                .collect();
            let c = PolicyCounts {
                successful: p.successful,
                failed: p.failed,
                mx_hosts: p.mx_hosts,
                failures,
            };
            counts.by_policy.insert(key, c);
        }
        counts
    }
}

fn policy_type(name: &str) -> Option<&'static str> {
    ["sts", "tlsa", "no-policy-found"]
        .into_iter()
        .find(|t| *t == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_a_save_and_load() {
        let mut c = Counts::default();
        let key = PolicyKey {
            policy_type: "sts",
            policy_domain: "example.test".into(),
            policy_string: vec!["version: STSv1".into(), "mode: enforce".into()],
        };
        c.success(key.clone(), "mx1.example.test");
        c.failure(key, "mx2.example.test", Failure::CertificateExpired);
        let text = serde_json::to_string(&c).unwrap();
        let back: Counts = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn merged_counts_add_up_as_one_node_would_have() {
        let key = PolicyKey {
            policy_type: "tlsa",
            policy_domain: "example.test".into(),
            policy_string: vec!["3 1 1 ab".into()],
        };
        let (mut a, mut b, mut one) = (Counts::default(), Counts::default(), Counts::default());
        for c in [&mut a, &mut one] {
            c.success(key.clone(), "mx1.example.test");
        }
        for c in [&mut b, &mut one] {
            c.failure(key.clone(), "mx2.example.test", Failure::TlsaInvalid);
            c.success(key.clone(), "mx1.example.test");
        }
        a.merge(b);
        assert_eq!(a.by_policy[&key].successful, 2);
        assert_eq!(a.by_policy[&key].failed, 1);
        assert_eq!(a.by_policy[&key].failures, one.by_policy[&key].failures);
    }

    #[test]
    fn every_failure_has_one_name_and_comes_back_from_it() {
        let mut seen = std::collections::BTreeSet::new();
        for (failure, name) in crate::NAMES {
            assert_eq!(failure.name(), name);
            assert_eq!(Failure::from_name(name), Some(failure));
            assert!(seen.insert(failure), "{failure:?} listed twice");
        }
        assert_eq!(Failure::from_name("no-such-result"), None);
    }
}
