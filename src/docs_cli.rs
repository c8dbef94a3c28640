//! `generate-docs`: the man pages and shell completions, made from this
//! very command line's definition (so they cannot drift from it), and
//! `portcullis.toml(5)` from `docs/configuration.md` (which `tests/docs.rs`
//! holds to the config parser), for packagers (`packaging/build-deb.sh`).
//! Hidden from `--help`.

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
    let page = man.join("portcullis.toml.5");
    std::fs::write(&page, man_page(CONFIGURATION, env!("CARGO_PKG_VERSION")))
        .with_context(|| format!("cannot write {}", page.display()))?;
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

/// The configuration file's reference, shipped as `portcullis.toml(5)`.
const CONFIGURATION: &str = include_str!("../docs/configuration.md");

/// `docs/configuration.md` as a man(7) page. It reads the Markdown that
/// file is written in: `#` (the title, given by `.TH` and NAME here) and
/// `##` headings, paragraphs, `- ` list items (continued by indented
/// lines; a key's item, `` `key` (type; default): what it does ``, as a
/// tagged paragraph), fenced code blocks, `code` and *emphasis*. Tables
/// and links would come out as their source text: that file has none.
fn man_page(markdown: &str, version: &str) -> String {
    let mut out = format!(
        ".TH PORTCULLIS.TOML 5 \"\" \"portcullis {version}\" \"File Formats\"\n\
         .SH NAME\nportcullis.toml \\- the portcullis configuration file\n\
         .SH SYNOPSIS\n/etc/portcullis/portcullis.toml\n.SH DESCRIPTION\n"
    );
    let mut code = false;
    // Whether the line before was text, so this one continues it.
    let mut in_text = false;
    let mut lines = markdown.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("```") {
            out.push_str(if code {
                ".fi\n.RE\n"
            } else {
                ".PP\n.RS 4\n.nf\n"
            });
            code = !code;
            in_text = false;
        } else if code {
            out.push_str(&request_safe(escape(line)));
        } else if line.trim().is_empty() || line.starts_with("# ") {
            in_text = false;
        } else if let Some(heading) = line.strip_prefix("## ") {
            let heading = match heading.contains('`') {
                true => inline(heading),
                false => escape(&heading.to_uppercase()),
            };
            out.push_str(&format!(".SH {heading}\n"));
            in_text = false;
        } else if let Some(first) = line.strip_prefix("- ") {
            // The item with its indented continuation lines, as one line.
            let mut item = first.to_owned();
            while let Some(more) = lines.next_if(|l| l.starts_with("  ") && !l.trim().is_empty()) {
                item.push(' ');
                item.push_str(more.trim());
            }
            out.push_str(&list_item(&item));
            in_text = false;
        } else {
            if !in_text {
                out.push_str(".PP\n");
            }
            out.push_str(&request_safe(inline(line.trim_start())));
            in_text = true;
        }
    }
    out.push_str(".SH SEE ALSO\n\\fBportcullis\\fR(1), \\fBportcullis\\-check\\-config\\fR(1)\n");
    out
}

/// `` `key` (type; default): text `` as a tagged paragraph (the key and
/// its type and default as the tag); any other item with a bullet.
fn list_item(item: &str) -> String {
    let tagged = item
        .starts_with('`')
        .then(|| item.split_once("): "))
        .flatten();
    match tagged {
        Some((tag, text)) => format!(
            ".TP\n{}{}",
            request_safe(inline(&format!("{tag})"))),
            request_safe(inline(text))
        ),
        None => format!(".IP \\(bu 2\n{}", request_safe(inline(item))),
    }
}

/// `code` in bold, *emphasis* in italics, the rest escaped.
fn inline(text: &str) -> String {
    let mut out = String::new();
    let (mut code, mut emphasis) = (false, false);
    for c in text.chars() {
        match c {
            '`' => {
                out.push_str(if code { "\\fR" } else { "\\fB" });
                code = !code;
            }
            '*' if !code => {
                out.push_str(if emphasis { "\\fR" } else { "\\fI" });
                emphasis = !emphasis;
            }
            // In code, a minus sign (what one types), not a hyphen.
            '-' if code => out.push_str("\\-"),
            c => out.push_str(&escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    out
}

/// Text as roff prints it: backslashes escaped, and the few non-ASCII
/// characters the document uses as roff's named glyphs.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '…' => out.push_str("\\&..."),
            '→' => out.push_str("\\(->"),
            '§' => out.push_str("\\(sc"),
            '—' => out.push_str("\\(em"),
            '–' => out.push_str("\\(en"),
            c => out.push(c),
        }
    }
    out
}

/// One line of text that roff will not take for a request: a line that
/// starts with `.` or `'` is one, unless `\&` comes first.
fn request_safe(line: String) -> String {
    match line.starts_with(['.', '\'']) {
        true => format!("\\&{line}\n"),
        false => format!("{line}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_markdown_becomes_roff() {
        let page = man_page(
            "# t\n\nIntro `a-b` and *c*,\nwrapped.\n\n## `[dns]`\n\n\
             - `timeout_ms` (integer; 5000): per query\n  \\ more.\n\
             - plain item\n\n## Top-level keys\n\n```text\n.dot \\ line\n```\n",
            "9.9",
        );
        let body = page.split_once(".SH DESCRIPTION\n").unwrap().1;
        assert_eq!(
            body,
            ".PP\nIntro \\fBa\\-b\\fR and \\fIc\\fR,\nwrapped.\n\
             .SH \\fB[dns]\\fR\n\
             .TP\n\\fBtimeout_ms\\fR (integer; 5000)\nper query \\e more.\n\
             .IP \\(bu 2\nplain item\n\
             .SH TOP-LEVEL KEYS\n\
             .PP\n.RS 4\n.nf\n\\&.dot \\e line\n.fi\n.RE\n\
             .SH SEE ALSO\n\\fBportcullis\\fR(1), \\fBportcullis\\-check\\-config\\fR(1)\n"
        );
        assert!(page.starts_with(".TH PORTCULLIS.TOML 5 \"\" \"portcullis 9.9\""));
    }

    /// Every key the reference documents is a tag of the man page, and
    /// no line of text can be taken for a roff request.
    #[test]
    fn the_configuration_reference_becomes_portcullis_toml_5() {
        let page = man_page(CONFIGURATION, "0");
        let items = CONFIGURATION
            .lines()
            .filter(|l| l.starts_with("- `"))
            .count();
        assert!(items > 100, "{items} keys?");
        assert_eq!(page.matches("\n.TP\n\\fB").count(), items);
        let requests = [
            ".TH ", ".SH ", ".PP", ".TP", ".IP ", ".RS ", ".RE", ".nf", ".fi",
        ];
        for line in page.lines().filter(|l| l.starts_with(['.', '\''])) {
            assert!(requests.iter().any(|r| line.starts_with(r)), "{line:?}");
        }
    }
}
