//! The documents a newcomer reads, held to the tree they describe, so
//! that they cannot drift from it unnoticed:
//!
//! * every repository path that `README.md`, `docs/flow.md` and
//!   `docs/configuration.md` name in backticks exists;
//! * every crate under `crates/` is in the README's layout table;
//! * every key the config parser accepts is documented in its table's
//!   section of `docs/configuration.md`, and nothing it refuses is.
//!
//! The accepted keys are not a list kept here (it would drift too): they
//! are read from the parser itself, which refuses unknown keys in every
//! table and names the keys it accepts when it does.

use portcullis_config::ConfigError;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(doc: &str) -> String {
    std::fs::read_to_string(repo().join(doc)).unwrap_or_else(|e| panic!("cannot read {doc}: {e}"))
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The crates of the workspace: the directories under `crates/`.
fn crates() -> BTreeSet<String> {
    names_in(&repo().join("crates"))
        .into_iter()
        .filter(|c| repo().join("crates").join(c).is_dir())
        .collect()
}

/// The text with fenced code blocks blanked out (line numbers kept):
/// commands and sample output name no repository paths.
fn prose(text: &str) -> String {
    let mut fenced = false;
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return "";
            }
            if fenced { "" } else { line }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `code spans` of a text outside code blocks, with the line each
/// starts on.
fn code_spans(text: &str) -> Vec<(usize, String)> {
    let text = prose(text);
    let mut line = 1;
    let mut spans = Vec::new();
    for (i, piece) in text.split('`').enumerate() {
        if i % 2 == 1 {
            spans.push((line, piece.to_owned()));
        }
        line += piece.matches('\n').count();
    }
    spans
}

/// Whether a code span names a file of this repository, and which: a
/// path under a top-level entry (`crates/queue/src/spool.rs`, `bench/`,
/// `.ci/run`), a path inside a crate (`pipeline/src/rcpt.rs`), or a
/// source or document file name (`committer.rs`, `NOTES.md`), which the
/// text's context places. `spool.rs::append` names `spool.rs`. System
/// paths (`/etc/...`), URLs, `DATA/...` and commands are not candidates.
fn repository_path(
    span: &str,
    roots: &BTreeSet<String>,
    crates: &BTreeSet<String>,
) -> Option<String> {
    let span = match span.find(".rs::") {
        Some(at) => &span[..at + 3],
        None => span,
    };
    let refused = span.is_empty()
        || span.chars().any(char::is_whitespace)
        || span.starts_with(['/', '~', '$', '-', '@'])
        || span.starts_with("./")
        || span.contains("://")
        || span.contains(['{', '=', '(', '*', '<', '…']);
    if refused {
        return None;
    }
    let first = span.split('/').next().unwrap_or(span);
    let under_known = span.contains('/') && (roots.contains(first) || crates.contains(first));
    let source_file = Path::new(span)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["rs", "sh", "py", "md", "toml", "service", "lock"].contains(&e));
    (under_known || source_file).then(|| span.to_owned())
}

/// Where `path` is: as written from the top (`crates/...`, `bench/...`),
/// inside a crate (`queue/src/spool.rs`), or, for a shorter name, beside
/// the path named before it or in one of that path's ancestors (each
/// also with `src/`): `committer.rs` after `crates/queue/src/spool.rs`,
/// `route.rs` after `crates/delivery/src/router/mod.rs`.
fn resolve(path: &str, previous: Option<&Path>, roots: &BTreeSet<String>) -> Option<PathBuf> {
    let root = repo();
    let first = path.split('/').next().unwrap_or(path);
    let candidates: Vec<PathBuf> = if path.contains('/') && roots.contains(first) {
        vec![root.join(path)]
    } else if path.contains('/') && root.join("crates").join(first).is_dir() {
        vec![root.join("crates").join(path)]
    } else {
        let mut base = previous.map_or_else(
            || root.to_owned(),
            |p| {
                if p.is_dir() {
                    p.to_owned()
                } else {
                    p.parent().unwrap_or(root).to_owned()
                }
            },
        );
        let mut tries = Vec::new();
        loop {
            tries.push(base.join(path));
            tries.push(base.join("src").join(path));
            if base == root || !base.pop() {
                break;
            }
        }
        tries
    };
    candidates.into_iter().find(|c| c.exists())
}

#[test]
fn every_path_the_docs_name_exists() {
    let roots = names_in(repo());
    let crates = crates();
    let mut missing = Vec::new();
    let mut checked = 0;
    for doc in ["README.md", "docs/flow.md", "docs/configuration.md"] {
        let mut previous: Option<PathBuf> = None;
        for (line, span) in code_spans(&read(doc)) {
            let Some(path) = repository_path(&span, &roots, &crates) else {
                continue;
            };
            checked += 1;
            match resolve(&path, previous.as_deref(), &roots) {
                Some(found) => previous = Some(found),
                None => missing.push(format!(
                    "{doc}:{line}: `{span}` names no file or directory of the repository \
                     (moved or renamed? write the path as it is now)"
                )),
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} paths found: is code_spans broken?"
    );
    assert!(missing.is_empty(), "\n{}\n", missing.join("\n"));
}

/// The first column of the README's layout table (`crates/smtp`, ...).
fn layout_table() -> BTreeSet<String> {
    let readme = read("README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Layout\n"))
        .expect("README.md has a `## Layout` section");
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(|c| c.trim_end_matches('/').to_owned())
        .collect()
}

#[test]
fn every_crate_is_in_the_readme_layout_table() {
    let listed = layout_table();
    let missing: Vec<String> = crates()
        .into_iter()
        .filter(|c| !listed.contains(&format!("crates/{c}")))
        .map(|c| format!("README.md: the layout table (## Layout) does not list `crates/{c}`"))
        .collect();
    assert!(missing.is_empty(), "\n{}\n", missing.join("\n"));
}

/// The keys a config table accepts, as the parser names them when it
/// refuses `zzz_probe` in `text`; None when it refused something else
/// (the table has another shape).
fn accepted(text: &str) -> Option<Vec<String>> {
    let error = portcullis_config::parse(text, Path::new("probe.toml")).err()?;
    let ConfigError::Invalid { message, .. } = error else {
        return None;
    };
    // serde: "unknown field `x`, expected one of `a`, `b`", "expected `a`
    // or `b`", "expected `a`", or "there are no fields".
    let expected = message.strip_prefix("unknown field `zzz_probe`, ")?;
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// Every table of the config file (by the heading that documents it:
/// `Top-level keys`, `[dns]`, `[[listener]]`, `[class.NAME]`) and the
/// keys it accepts.
fn config_keys() -> BTreeMap<String, BTreeSet<String>> {
    let top = accepted("zzz_probe = 1\n").expect(
        "the config parser no longer names the keys it accepts when it refuses one; \
         tests/docs.rs needs another way to list them",
    );
    assert!(
        top.iter().any(|k| k == "hostname"),
        "top-level keys: {top:?}"
    );
    let mut tables = BTreeMap::new();
    let mut values = BTreeSet::new();
    for key in top {
        // A table `[dns]`, an array of tables `[[listener]]`, a map of
        // tables `[class.NAME]`, or else a value (`hostname = "..."`).
        let probes = [
            (format!("[{key}]"), format!("[{key}]\nzzz_probe = 1\n")),
            (format!("[[{key}]]"), format!("[[{key}]]\nzzz_probe = 1\n")),
            (
                format!("[{key}.NAME]"),
                format!("[{key}.zzz_name]\nzzz_probe = 1\n"),
            ),
        ];
        let found = probes
            .into_iter()
            .find_map(|(heading, text)| accepted(&text).map(|keys| (heading, keys)));
        let Some((heading, keys)) = found else {
            values.insert(key);
            continue;
        };
        assert!(!keys.is_empty(), "{heading} accepts no keys?");
        tables.insert(heading, keys.into_iter().collect());
    }
    tables.insert("Top-level keys".to_owned(), values);
    tables
}

/// The sections of docs/configuration.md (by the table in backticks in
/// the heading, or the heading itself) and the keys documented in each
/// (the list items that start with a key in backticks), with their lines.
fn documented_keys() -> BTreeMap<String, BTreeMap<String, usize>> {
    let text = prose(&read("docs/configuration.md"));
    let mut sections: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(heading) = line.strip_prefix("## ") {
            let name = match heading.split('`').nth(1) {
                Some(table) => table.to_owned(),
                None => heading.trim().to_owned(),
            };
            sections.entry(name.clone()).or_default();
            current = Some(name);
        } else if let (Some(section), Some(item)) = (&current, line.strip_prefix("- `")) {
            let key = item.split('`').next().unwrap_or_default().to_owned();
            sections.get_mut(section).unwrap().insert(key, i + 1);
        }
    }
    sections
}

#[test]
fn every_config_key_is_documented() {
    let accepted = config_keys();
    let documented = documented_keys();
    let mut problems = Vec::new();
    for (table, keys) in &accepted {
        let Some(doc) = documented.get(table) else {
            problems.push(format!(
                "docs/configuration.md: no section `## \\`{table}\\`` for its keys {keys:?}"
            ));
            continue;
        };
        for key in keys.iter().filter(|k| !doc.contains_key(*k)) {
            problems.push(format!(
                "docs/configuration.md: `{key}` of {table} is accepted by the config parser \
                 but not documented in that section (a list item `- \\`{key}\\` (type; default): ...`)"
            ));
        }
    }
    for (table, keys) in &documented {
        let Some(parser) = accepted.get(table) else {
            if !keys.is_empty() {
                problems.push(format!(
                    "docs/configuration.md: section `{table}` documents keys, but the config \
                     parser has no such table"
                ));
            }
            continue;
        };
        for (key, line) in keys.iter().filter(|(k, _)| !parser.contains(*k)) {
            problems.push(format!(
                "docs/configuration.md:{line}: `{key}` is documented in {table} but the \
                 config parser refuses it there"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// The parser's key list is what the test above trusts: make sure it
/// sees the tables it must (each shape at least once).
#[test]
fn the_config_parser_names_its_keys_in_every_shape() {
    let tables = config_keys();
    for (table, key) in [
        ("Top-level keys", "hostname"),
        ("[dns]", "trust_ad"),
        ("[[listener]]", "proxy_from"),
        ("[class.NAME]", "bytes_per_minute"),
        ("[delivery]", "mta_sts"),
        ("[acme]", "directory"),
    ] {
        assert!(
            tables.get(table).is_some_and(|keys| keys.contains(key)),
            "{table} {key} not found: {tables:?}"
        );
    }
}
