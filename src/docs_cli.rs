//! `generate-docs`: the man pages and shell completions, made from this
//! very command line's definition (so they cannot drift from it), for
//! packagers (`packaging/build-deb.sh`). Hidden from `--help`.

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;
use std::path::Path;

pub fn generate(out: &Path) -> anyhow::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // portcullis.1 and one page per subcommand (portcullis-queue.1, ...).
    clap_mangen::generate_to(crate::Cli::command(), &man)
        .with_context(|| format!("cannot write man pages to {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(
            shell,
            &mut crate::Cli::command(),
            "portcullis",
            &completions,
        )
        .with_context(|| format!("cannot write {shell} completions"))?;
    }
    Ok(())
}
