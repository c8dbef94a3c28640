//! Turn a byte offset in a TOML file into what a person needs to find the
//! mistake: line, column and the dotted key (`listener.bind`).

/// Where in the file something is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Dotted key path of the entry on that line, e.g. `tls.cert`.
    pub key: String,
}

/// Where byte `offset` of `text` is, with the key on that line.
pub fn locate(text: &str, offset: usize) -> Location {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("");
    Location {
        line,
        column,
        key: key_path(&text[..line_start], line_text),
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The key on `line`, prefixed by the table header in force above it. A
/// header line itself names its table.
fn key_path(above: &str, line: &str) -> String {
    if let Some(header) = table_header(line) {
        return header;
    }
    // A value continued over several lines (an array) belongs to the last
    // `key =` line above it.
    let key_line = std::iter::once(line)
        .chain(above.lines().rev())
        .take_while(|l| table_header(l).is_none())
        .find(|l| l.contains('='));
    let key = key_line
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .unwrap_or_default();
    let table = above.lines().rev().find_map(table_header);
    match (table, key.is_empty()) {
        (Some(t), false) => format!("{t}.{key}"),
        (Some(t), true) => t,
        (None, false) => key,
        (None, true) => "(top level)".to_owned(),
    }
}

fn table_header(line: &str) -> Option<String> {
    let t = line.trim();
    let inner = t.strip_prefix("[[").and_then(|r| r.split_once("]]"));
    let inner = inner.or_else(|| t.strip_prefix('[').and_then(|r| r.split_once(']')));
    inner.map(|(name, _)| name.trim().to_owned())
}
