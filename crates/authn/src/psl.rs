//! The organizational domain of RFC 7489 §3.2: the public suffix a name
//! falls under (the Public Suffix List, longest matching rule, wildcards
//! and exceptions) plus one label. Plain logic over the list's text; the
//! matching itself is the `publicsuffix` crate's.

use publicsuffix::{List, Psl};
use std::sync::{Arc, LazyLock};

/// The list built into the binary (see `data/README.md`).
const EMBEDDED: &str = include_str!("../data/public_suffix_list.dat");

#[derive(Debug, thiserror::Error)]
#[error("not a Public Suffix List: {0}")]
pub struct SuffixListError(String);

pub struct SuffixList(List);

static BUILT_IN: LazyLock<Arc<SuffixList>> = LazyLock::new(|| {
    // The embedded text is ours and is checked by a unit test; should it
    // ever fail to parse, an empty list still answers (every TLD a suffix).
    Arc::new(SuffixList(EMBEDDED.parse().unwrap_or_default()))
});

impl SuffixList {
    /// The list `[dmarc] public_suffix_list` names, or the built-in copy;
    /// the error names the key and the file.
    pub fn for_config(config: &portcullis_config::Config) -> Result<Arc<SuffixList>, String> {
        let Some(path) = &config.dmarc.public_suffix_list else {
            return Ok(SuffixList::built_in());
        };
        let key = "[dmarc] public_suffix_list";
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
        let list =
            SuffixList::parse(&text).map_err(|e| format!("{key}: {}: {e}", path.display()))?;
        Ok(Arc::new(list))
    }

    pub fn built_in() -> Arc<SuffixList> {
        BUILT_IN.clone()
    }

    pub fn parse(text: &str) -> Result<SuffixList, SuffixListError> {
        let list: List = text.parse().map_err(|e| SuffixListError(format!("{e}")))?;
        if list.is_empty() {
            return Err(SuffixListError("it holds no rules".into()));
        }
        Ok(SuffixList(list))
    }

    /// The organizational domain of `domain`, lower-cased; None for a
    /// public suffix itself or a name that is not a domain (an empty
    /// label, a leading dot).
    pub fn organizational_domain(&self, domain: &str) -> Option<String> {
        let name = domain.strip_suffix('.').unwrap_or(domain).to_lowercase();
        if name.is_empty() || name.split('.').any(str::is_empty) {
            return None;
        }
        let found = self.0.domain(name.as_bytes())?;
        std::str::from_utf8(found.as_bytes())
            .ok()
            .map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_list_parses() {
        assert!(SuffixList::parse(EMBEDDED).is_ok());
    }

    #[test]
    fn subdomains_share_their_registered_domain() {
        let l = SuffixList::built_in();
        assert_eq!(
            l.organizational_domain("a.b.Example.CO.UK").as_deref(),
            Some("example.co.uk")
        );
        assert_eq!(l.organizational_domain("co.uk"), None);
    }

    #[test]
    fn wildcards_and_exceptions_follow_the_list() {
        let l = SuffixList::built_in();
        assert_eq!(
            l.organizational_domain("a.b.c.kobe.jp").as_deref(),
            Some("b.c.kobe.jp")
        );
        assert_eq!(
            l.organizational_domain("www.city.kobe.jp").as_deref(),
            Some("city.kobe.jp")
        );
    }
}
