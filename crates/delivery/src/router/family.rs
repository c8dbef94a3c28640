//! Which address family an attempt goes over: the order
//! `[delivery] address_preference` asks, and the refusal (5.7.25/5.7.26)
//! that sends it on over IPv4.

use crate::{Action, RcptOutcome};
use portcullis_config::AddressPreference;
use std::net::IpAddr;

/// Whether every recipient was refused because our IPv6 address lacks a
/// PTR record or authentication (`550 5.7.25`, `5.7.26`).
pub(super) fn refuses_ipv6(outcomes: &[RcptOutcome]) -> bool {
    !outcomes.is_empty()
        && outcomes.iter().all(|o| {
            !matches!(o, RcptOutcome::Delivered(_)) && o.answer().action == Action::RetryIpv4
        })
}

/// A host's addresses in the order `[delivery] address_preference` asks
/// (stable: DNS's order within a family).
pub(super) fn preferred(addrs: &[IpAddr], preference: AddressPreference) -> Vec<IpAddr> {
    let mut v = addrs.to_vec();
    match preference {
        AddressPreference::Ipv6 => v.sort_by_key(|a| a.is_ipv4()),
        AddressPreference::Ipv4 => v.sort_by_key(|a| a.is_ipv6()),
        AddressPreference::Any => {}
    }
    v
}
