//! publicsuffix.org's own test cases (tests/data/dmarc/psl_tests.txt,
//! "<name> <registrable domain or null>") against the list built into the
//! binary (data/public_suffix_list.dat, the same list commit). The
//! registrable domain is RFC 7489 §3.2's organizational domain, which DMARC
//! uses for discovery and relaxed alignment.

use portcullis_authn::SuffixList;
use std::path::Path;

const CASES: &str = "tests/data/dmarc/psl_tests.txt";

#[test]
fn every_public_suffix_list_case_holds() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(CASES);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{CASES}: {e}"));
    let list = SuffixList::built_in();
    let mut failures = Vec::new();
    let mut count = 0;
    for (n, line) in text.lines().enumerate() {
        // `//` starts a comment, and comments out the cases of TLDs that
        // are not on the Internet (`.local`).
        if line.trim().is_empty() || line.starts_with("//") {
            continue;
        }
        let (name, want) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("{CASES}:{}: {line:?}", n + 1));
        count += 1;
        // The input `null` stands for no name at all.
        let name = if name == "null" { "" } else { name };
        let want = (want != "null").then_some(want);
        let got = list.organizational_domain(name);
        if got.as_deref() != want {
            failures.push(format!(
                "{CASES}:{}: {name:?}: got {}, want {}",
                n + 1,
                got.as_deref().unwrap_or("null"),
                want.unwrap_or("null")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(count, 78, "cases run");
}
