//! `alias` and `srs rotate`: the local aliases file and the SRS secrets
//! in the data directory. Forwarding itself (SRS, ARC) happens in the
//! server, not here.

use crate::AliasAction;
use anyhow::Context as _;
use portcullis_config::Config;

pub fn srs_rotate(config: &Config) -> anyhow::Result<()> {
    let path = portcullis_pipeline::forwarding::secrets_path(&config.data_dir);
    portcullis_pipeline::forwarding::rotate_secret(&path, 3)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "new SRS secret in {}; the two before it still verify",
        path.display()
    );
    Ok(())
}

pub fn alias(action: AliasAction, config: &Config) -> anyhow::Result<()> {
    let path = config.data_dir.join("aliases.json");
    let mut aliases = portcullis_forwarding::Aliases::load(&path)?;
    match action {
        AliasAction::Add { alias, targets } => {
            aliases.add(&alias, &targets)?;
            aliases.save()?;
            println!("{alias} -> {}", targets.join(", "));
        }
        AliasAction::Del { alias } => {
            aliases.remove(&alias)?;
            aliases.save()?;
            println!("{alias} removed");
        }
        AliasAction::List => {
            for (a, targets) in aliases.list() {
                println!("{a}  ->  {}", targets.join(", "));
            }
        }
    }
    Ok(())
}
