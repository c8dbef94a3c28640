//! The text of an SPF record (RFC 7208 §4.5, §5, §6, §7.1): selecting the
//! one record among a name's TXT strings, and parsing it into directives,
//! modifiers and macro strings. Plain logic: no DNS, no clock.
//!
//! A record with any syntax error anywhere is a permerror before a single
//! mechanism is evaluated (§4.6), so the whole grammar is checked here.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a record cannot be used: the permerror's reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("more than one v=spf1 record")]
    MultipleRecords,
    #[error("the record is not 7-bit ASCII")]
    NotAscii,
    #[error("unknown or malformed term {0:?}")]
    BadTerm(String),
    #[error("malformed domain-spec {0:?}")]
    BadDomainSpec(String),
    #[error("malformed macro in {0:?}")]
    BadMacro(String),
    #[error("bad CIDR length in {0:?}")]
    BadCidr(String),
    #[error("bad IP network in {0:?}")]
    BadNetwork(String),
    #[error("{0}= given more than once")]
    DuplicateModifier(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qualifier {
    Pass,
    Fail,
    SoftFail,
    Neutral,
}

/// One mechanism (§5). Domain specs are kept unexpanded: macros are
/// expanded only when the mechanism is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mechanism {
    All,
    Include(MacroString),
    A {
        domain: Option<MacroString>,
        cidr4: u8,
        cidr6: u8,
    },
    Mx {
        domain: Option<MacroString>,
        cidr4: u8,
        cidr6: u8,
    },
    Ptr(Option<MacroString>),
    Ip4(Ipv4Addr, u8),
    Ip6(Ipv6Addr, u8),
    Exists(MacroString),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub directives: Vec<(Qualifier, Mechanism)>,
    pub redirect: Option<MacroString>,
    pub exp: Option<MacroString>,
}

/// A macro string (§7.1): literal text and macros, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MacroString(pub Vec<Piece>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    /// `%%`, `%_`, `%-`: already replaced by their text.
    Escape(&'static str),
    Macro(Macro),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Macro {
    /// Lower-case letter: s l o d i p h v, or c r t in explanations.
    pub letter: char,
    /// An upper-case letter asks for URL escaping (§7.3).
    pub escape: bool,
    /// Keep this many right-hand parts.
    pub keep: Option<usize>,
    pub reverse: bool,
    pub delimiters: String,
}

impl MacroString {
    pub fn uses(&self, letter: char) -> bool {
        self.0
            .iter()
            .any(|p| matches!(p, Piece::Macro(m) if m.letter == letter))
    }
}

/// The SPF records among one name's TXT records (§4.5): each record's
/// strings joined with nothing between them, kept when the text is
/// exactly `v=spf1` or starts with `v=spf1 ` (case-insensitive).
pub fn select(txt_records: &[Vec<u8>]) -> Result<Option<&[u8]>, RecordError> {
    let mut found = txt_records.iter().filter(|r| is_spf_record(r));
    let first = found.next();
    if found.next().is_some() {
        return Err(RecordError::MultipleRecords);
    }
    Ok(first.map(Vec::as_slice))
}

fn is_spf_record(r: &[u8]) -> bool {
    r.len() >= 6 && r[..6].eq_ignore_ascii_case(b"v=spf1") && (r.len() == 6 || r[6] == b' ')
}

/// Parse a selected record. Terms are separated by spaces only (§4.6.1):
/// a tab or any other control character makes a malformed term.
pub fn parse(record: &[u8]) -> Result<Record, RecordError> {
    let text = std::str::from_utf8(record).map_err(|_| RecordError::NotAscii)?;
    if !text.is_ascii() {
        return Err(RecordError::NotAscii);
    }
    let mut out = Record {
        directives: Vec::new(),
        redirect: None,
        exp: None,
    };
    for term in text[6..].split(' ').filter(|t| !t.is_empty()) {
        if let Some((name, value)) = modifier(term) {
            parse_modifier(&mut out, name, value, term)?;
        } else {
            out.directives.push(parse_directive(term)?);
        }
    }
    Ok(out)
}

/// `name "=" value` with name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ).
fn modifier(term: &str) -> Option<(&str, &str)> {
    let (name, value) = term.split_once('=')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    .then_some((name, value))
}

fn parse_modifier(
    out: &mut Record,
    name: &str,
    value: &str,
    term: &str,
) -> Result<(), RecordError> {
    let slot = if name.eq_ignore_ascii_case("redirect") {
        Some((&mut out.redirect, "redirect"))
    } else if name.eq_ignore_ascii_case("exp") {
        Some((&mut out.exp, "exp"))
    } else {
        None
    };
    match slot {
        Some((slot, key)) => {
            if slot.is_some() {
                return Err(RecordError::DuplicateModifier(key));
            }
            *slot = Some(domain_spec(value, term)?);
        }
        // Unknown modifiers are ignored (§6), but must still be macro
        // strings: a malformed one is a syntax error like any other.
        None => {
            macro_string(value, false, term)?;
        }
    }
    Ok(())
}

fn parse_directive(term: &str) -> Result<(Qualifier, Mechanism), RecordError> {
    let (qualifier, rest) = match term.as_bytes()[0] {
        b'+' => (Qualifier::Pass, &term[1..]),
        b'-' => (Qualifier::Fail, &term[1..]),
        b'~' => (Qualifier::SoftFail, &term[1..]),
        b'?' => (Qualifier::Neutral, &term[1..]),
        _ => (Qualifier::Pass, term),
    };
    let name_end = rest.find([':', '/']).unwrap_or(rest.len());
    let (name, arg) = rest.split_at(name_end);
    let bad = || RecordError::BadTerm(term.to_owned());
    let mechanism = match name.to_ascii_lowercase().as_str() {
        "all" if arg.is_empty() => Mechanism::All,
        "include" => Mechanism::Include(required_domain(arg, term)?),
        "exists" => Mechanism::Exists(required_domain(arg, term)?),
        "ptr" => Mechanism::Ptr(optional_domain(arg, term)?),
        "a" => {
            let (domain, cidr4, cidr6) = domain_and_cidrs(arg, term)?;
            Mechanism::A {
                domain,
                cidr4,
                cidr6,
            }
        }
        "mx" => {
            let (domain, cidr4, cidr6) = domain_and_cidrs(arg, term)?;
            Mechanism::Mx {
                domain,
                cidr4,
                cidr6,
            }
        }
        "ip4" => {
            let (net, len) = network(arg, 32, term)?;
            Mechanism::Ip4(net.parse().map_err(|_| network_error(term))?, len)
        }
        "ip6" => {
            let (net, len) = network(arg, 128, term)?;
            Mechanism::Ip6(net.parse().map_err(|_| network_error(term))?, len)
        }
        _ => return Err(bad()),
    };
    Ok((qualifier, mechanism))
}

fn network_error(term: &str) -> RecordError {
    RecordError::BadNetwork(term.to_owned())
}

fn required_domain(arg: &str, term: &str) -> Result<MacroString, RecordError> {
    optional_domain(arg, term)?.ok_or_else(|| RecordError::BadTerm(term.to_owned()))
}

/// `[":" domain-spec]`.
fn optional_domain(arg: &str, term: &str) -> Result<Option<MacroString>, RecordError> {
    if arg.is_empty() {
        return Ok(None);
    }
    let spec = arg
        .strip_prefix(':')
        .ok_or_else(|| RecordError::BadTerm(term.to_owned()))?;
    domain_spec(spec, term).map(Some)
}

/// `[":" domain-spec] [dual-cidr-length]` of `a` and `mx` (§5.3, §5.4).
fn domain_and_cidrs(arg: &str, term: &str) -> Result<(Option<MacroString>, u8, u8), RecordError> {
    let (rest, cidr6) = match trailing_cidr(arg, "//") {
        Some((rest, digits)) => (rest, cidr_length(digits, 128, term)?),
        None => (arg, 128),
    };
    let (rest, cidr4) = match trailing_cidr(rest, "/") {
        Some((rest, digits)) => (rest, cidr_length(digits, 32, term)?),
        None => (rest, 32),
    };
    Ok((optional_domain(rest, term)?, cidr4, cidr6))
}

/// Split `text` into what comes before a final `SEP DIGITS`.
fn trailing_cidr<'a>(text: &'a str, sep: &str) -> Option<(&'a str, &'a str)> {
    let digits_start = text.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let before = text[..digits_start].strip_suffix(sep)?;
    // "//" must not be taken for "/" followed by an empty ip4 length.
    if sep == "/" && before.ends_with('/') {
        return None;
    }
    Some((before, &text[digits_start..]))
}

/// ip4-cidr-length / ip6-cidr-length: "0" or a number without a leading
/// zero, no larger than the address (§5.6).
fn cidr_length(digits: &str, max: u8, term: &str) -> Result<u8, RecordError> {
    let bad = || RecordError::BadCidr(term.to_owned());
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return Err(bad());
    }
    let n: u32 = digits.parse().map_err(|_| bad())?;
    u8::try_from(n).ok().filter(|n| *n <= max).ok_or_else(bad)
}

fn network<'a>(arg: &'a str, max: u8, term: &str) -> Result<(&'a str, u8), RecordError> {
    let arg = arg
        .strip_prefix(':')
        .ok_or_else(|| RecordError::BadTerm(term.to_owned()))?;
    match arg.split_once('/') {
        Some((net, digits)) => Ok((net, cidr_length(digits, max, term)?)),
        None => Ok((arg, max)),
    }
}

/// domain-spec = macro-string domain-end;
/// domain-end = ( "." toplabel [ "." ] ) / macro-expand (§7.1).
pub fn domain_spec(text: &str, term: &str) -> Result<MacroString, RecordError> {
    let parsed = macro_string(text, false, term)?;
    let ends_well = match parsed.0.last() {
        Some(Piece::Macro(_) | Piece::Escape(_)) => true,
        Some(Piece::Literal(tail)) => {
            let tail = tail.strip_suffix('.').unwrap_or(tail);
            tail.rsplit_once('.')
                .is_some_and(|(_, top)| is_toplabel(top))
        }
        None => false,
    };
    if ends_well {
        Ok(parsed)
    } else {
        Err(RecordError::BadDomainSpec(term.to_owned()))
    }
}

/// toplabel = ( *alphanum ALPHA *alphanum ) /
///            ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
pub fn is_toplabel(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().any(|c| c.is_ascii_alphabetic() || *c == b'-')
}

/// A macro string; `explanation` admits spaces and the c, r, t macros
/// (explain-string, §6.2, §7.1).
pub fn macro_string(text: &str, explanation: bool, term: &str) -> Result<MacroString, RecordError> {
    let bad = || RecordError::BadMacro(term.to_owned());
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '%' {
            let visible = ('!'..='~').contains(&c) || (explanation && c == ' ');
            if !visible {
                return Err(bad());
            }
            literal.push(c);
            continue;
        }
        let piece = match chars.next().map(|(_, c)| c) {
            Some('%') => Piece::Escape("%"),
            Some('_') => Piece::Escape(" "),
            Some('-') => Piece::Escape("%20"),
            Some('{') => {
                let close = text[i..].find('}').ok_or_else(bad)? + i;
                let inner = &text[i + 2..close];
                while chars.next().is_some_and(|(j, _)| j < close) {}
                Piece::Macro(parse_macro(inner, explanation).ok_or_else(bad)?)
            }
            _ => return Err(bad()),
        };
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(piece);
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(MacroString(pieces))
}

/// macro-letter transformers *delimiter, the inside of `%{...}`.
fn parse_macro(inner: &str, explanation: bool) -> Option<Macro> {
    let mut chars = inner.chars();
    let letter = chars.next()?;
    let lower = letter.to_ascii_lowercase();
    let allowed = matches!(lower, 's' | 'l' | 'o' | 'd' | 'i' | 'p' | 'h' | 'v')
        || (explanation && matches!(lower, 'c' | 'r' | 't'));
    if !allowed {
        return None;
    }
    let rest = chars.as_str();
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let keep = match &rest[..digits_end] {
        "" => None,
        // Zero parts would leave nothing to look up.
        d => Some(d.parse::<usize>().unwrap_or(usize::MAX)).filter(|n| *n > 0),
    };
    if digits_end > 0 && keep.is_none() {
        return None;
    }
    let mut rest = &rest[digits_end..];
    let reverse = match rest.strip_prefix(['r', 'R']) {
        Some(r) => {
            rest = r;
            true
        }
        None => false,
    };
    if !rest.chars().all(|c| ".-+,/_=".contains(c)) {
        return None;
    }
    Some(Macro {
        letter: lower,
        escape: letter.is_ascii_uppercase(),
        keep,
        reverse,
        delimiters: rest.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<Record, RecordError> {
        parse(text.as_bytes())
    }

    #[test]
    fn multiple_spf_records_are_an_error() {
        let records = vec![b"v=spf1 -all".to_vec(), b"V=SPF1 +all".to_vec()];
        assert_eq!(select(&records), Err(RecordError::MultipleRecords));
    }

    #[test]
    fn spf10_is_not_an_spf_record() {
        let records = vec![b"v=spf10 -all".to_vec(), b"other".to_vec()];
        assert_eq!(select(&records), Ok(None));
    }

    #[test]
    fn terms_are_split_by_spaces_only() {
        assert!(parsed("v=spf1 ip4:1.2.3.4\t-all").is_err());
        assert!(parsed("v=spf1  ip4:1.2.3.4   -all ").is_ok());
    }

    #[test]
    fn cidr_lengths_follow_the_grammar() {
        assert!(parsed("v=spf1 ip4:1.2.3.4/33").is_err());
        assert!(parsed("v=spf1 ip4:1.2.3.4/032").is_err());
        assert!(parsed("v=spf1 ip6:::1/129").is_err());
        assert!(parsed("v=spf1 a/24//64").is_ok());
        assert!(parsed("v=spf1 a//").is_err());
    }

    #[test]
    fn domain_specs_end_in_a_toplabel_or_a_macro() {
        assert!(parsed("v=spf1 a:foo.example.com").is_ok());
        assert!(parsed("v=spf1 a:%{d}").is_ok());
        assert!(parsed("v=spf1 a:museum").is_err());
        assert!(parsed("v=spf1 a:111.222.33.44").is_err());
        assert!(parsed("v=spf1 a:foo.-bar").is_err());
        assert!(parsed("v=spf1 a:ex:ample.com").is_ok());
    }

    #[test]
    fn modifiers_appear_at_most_once_and_unknown_ones_are_kept_quiet() {
        assert!(parsed("v=spf1 redirect=a.example redirect=b.example").is_err());
        let r = parsed("v=spf1 moo.cow-far_out=man:dog/cat -all").unwrap();
        assert_eq!(r.directives.len(), 1);
        assert!(parsed("v=spf1 =novalue -all").is_err());
    }

    #[test]
    fn macros_parse_with_transformers() {
        let m = macro_string("%{ir}.%{l1r-}.%{D2}._spf", false, "t").unwrap();
        assert_eq!(m.0.len(), 6);
        assert!(macro_string("%{c}", false, "t").is_err());
        assert!(macro_string("%{c} %{t}", true, "t").is_ok());
        assert!(macro_string("%{d0}", false, "t").is_err());
        assert!(macro_string("100%", false, "t").is_err());
    }
}
