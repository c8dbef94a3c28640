//! Outbound Port 25 Blocking (draft-akagiri-op25b-dynamicip §4): from a
//! description of a network — dynamic and static address blocks, the
//! designated MSAs, model-B partners' MSAs, the blocking point — derive the
//! access-list policy and print it for nftables, iptables, Cisco IOS or
//! Junos.
//!
//! Plain logic: text in, text out. Nothing here touches a router.

mod input;
mod prefix;
mod render;

pub use input::{InputError, Network, parse};
pub use prefix::{Prefix, merge};
pub use render::{Format, Stats, render, stats};
