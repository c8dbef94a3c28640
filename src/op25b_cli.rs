//! `op25b`: render OP25B access-list rules for a network described in a
//! TOML file. The rules are computed in crates/op25b; this maps the
//! command line onto it and prints.

use crate::Op25bFormat;
use anyhow::Context as _;
use std::path::PathBuf;

pub fn op25b(input: PathBuf, format: Op25bFormat, stats: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let network =
        portcullis_op25b::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
    let format = match format {
        Op25bFormat::Nftables => portcullis_op25b::Format::Nftables,
        Op25bFormat::Iptables => portcullis_op25b::Format::Iptables,
        Op25bFormat::Ip6tables => portcullis_op25b::Format::Ip6tables,
        Op25bFormat::Cisco => portcullis_op25b::Format::Cisco,
        Op25bFormat::Juniper => portcullis_op25b::Format::Juniper,
    };
    let (rules, s) = portcullis_op25b::render(&network, format);
    print!("{rules}");
    if stats {
        eprintln!(
            "predicted by the draft's formula: {} dynamic x ({} MSA + 1) = {}
emitted after merging: {} dynamic blocks, {} MSA blocks, {} port-25 rules",
            s.dynamic_blocks, s.msa_blocks, s.predicted, s.dynamic_merged, s.msa_merged, s.emitted
        );
    }
    Ok(())
}
