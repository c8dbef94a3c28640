//! Message content framing: DATA's dot-terminated text (RFC 5321 4.1.1.4,
//! dot-unstuffing 4.5.2) and BDAT's counted chunks (RFC 3030).
//!
//! Lines must end in CRLF. A bare LF or bare CR anywhere is a framing error
//! that ends the message: accepting one is what SMTP smuggling
//! (CVE-2023-51764/5/6) relies on, because another server may read the same
//! bytes as an end of data and a second message.

/// What went wrong with the content, decided once the content has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentError {
    BareNewline,
    LineTooLong,
    TooBig,
}

/// Progress of the DATA reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataProgress {
    /// All input consumed; the terminator has not been seen yet.
    NeedMore,
    /// `CRLF.CRLF` seen after consuming this many bytes of the input.
    Done(usize),
    /// A bare LF or CR: the stream can no longer be framed safely.
    BareNewline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    LineStart,
    InLine,
    Cr,
    Dot,
    DotCr,
}

/// Validates lines as they stream past, for both DATA and BDAT.
#[derive(Debug)]
pub struct LineCheck {
    max_line: usize,
    line_len: usize,
    pub too_long: bool,
}

impl LineCheck {
    pub fn new(max_line: usize) -> Self {
        LineCheck {
            max_line,
            line_len: 0,
            too_long: false,
        }
    }

    fn octet(&mut self) {
        self.line_len += 1;
        if self.line_len > self.max_line {
            self.too_long = true;
        }
    }

    fn end_line(&mut self) {
        self.line_len = 0;
    }
}

/// Reads the content after `354`: unstuffs dots, stops at `CRLF.CRLF`,
/// keeps at most `max_size` octets of body.
#[derive(Debug)]
pub struct DataReader {
    at: At,
    lines: LineCheck,
    max_size: u64,
    pub body: Vec<u8>,
    pub too_big: bool,
}

impl DataReader {
    pub fn new(max_line: usize, max_size: u64) -> Self {
        DataReader {
            at: At::LineStart,
            lines: LineCheck::new(max_line),
            max_size,
            body: Vec::new(),
            too_big: false,
        }
    }

    /// The content problem to report after the terminator, if any.
    pub fn error(&self) -> Option<ContentError> {
        if self.too_big {
            Some(ContentError::TooBig)
        } else if self.lines.too_long {
            Some(ContentError::LineTooLong)
        } else {
            None
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.too_big {
            return;
        }
        if (self.body.len() + bytes.len()) as u64 > self.max_size {
            self.too_big = true;
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(bytes);
    }

    pub fn feed(&mut self, input: &[u8]) -> DataProgress {
        let mut i = 0;
        while i < input.len() {
            if self.at == At::InLine {
                // Fast path: copy up to the next CR or LF in one go.
                let run = input[i..]
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(input.len() - i);
                for _ in 0..run {
                    self.lines.octet();
                }
                self.push(&input[i..i + run]);
                i += run;
                if i == input.len() {
                    break;
                }
            }
            let b = input[i];
            i += 1;
            self.lines.octet();
            self.at = match (self.at, b) {
                (At::LineStart, b'.') => At::Dot,
                (At::LineStart | At::InLine, b'\r') => At::Cr,
                (At::Cr, b'\n') => {
                    self.push(b"\r\n");
                    self.lines.end_line();
                    At::LineStart
                }
                (At::Dot, b'\r') => At::DotCr,
                (At::DotCr, b'\n') => return DataProgress::Done(i),
                (_, b'\n') | (At::Cr | At::DotCr, _) => return DataProgress::BareNewline,
                // RFC 5321 4.5.2: drop the first dot of a line that starts
                // with one, keep the rest.
                (At::Dot | At::LineStart | At::InLine, other) => {
                    self.push(&[other]);
                    At::InLine
                }
            };
        }
        DataProgress::NeedMore
    }
}

/// Checks BDAT chunk content for bare CR/LF and long lines. Chunks may
/// split a CRLF, so the state carries over between chunks.
#[derive(Debug)]
pub struct ChunkCheck {
    lines: LineCheck,
    after_cr: bool,
    pub bare_newline: bool,
}

impl ChunkCheck {
    pub fn new(max_line: usize) -> Self {
        ChunkCheck {
            lines: LineCheck::new(max_line),
            after_cr: false,
            bare_newline: false,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            self.lines.octet();
            match (self.after_cr, b) {
                (true, b'\n') => self.lines.end_line(),
                (true, _) | (false, b'\n') => self.bare_newline = true,
                (false, _) => {}
            }
            self.after_cr = b == b'\r';
        }
    }

    /// Called after the LAST chunk: a dangling CR is a bare CR.
    pub fn finish(&mut self) -> Option<ContentError> {
        if self.after_cr {
            self.bare_newline = true;
        }
        if self.bare_newline {
            Some(ContentError::BareNewline)
        } else if self.lines.too_long {
            Some(ContentError::LineTooLong)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8]) -> (DataProgress, Vec<u8>) {
        let mut r = DataReader::new(1000, 1 << 20);
        let p = r.feed(input);
        (p, r.body)
    }

    #[test]
    fn ends_at_crlf_dot_crlf_and_reports_consumed() {
        let (p, body) = read_all(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n");
        assert_eq!(p, DataProgress::Done(24));
        assert_eq!(body, b"Subject: x\r\n\r\nhello\r\n");
    }

    #[test]
    fn unstuffs_leading_dots() {
        let (_, body) = read_all(b"..one\r\n...two\r\n.\r\n");
        assert_eq!(body, b".one\r\n..two\r\n");
    }

    #[test]
    fn empty_message() {
        assert_eq!(read_all(b".\r\n"), (DataProgress::Done(3), Vec::new()));
    }

    #[test]
    fn byte_at_a_time_gives_the_same_result() {
        let input = b"a\r\n..b\r\n\r\n.\r\n";
        let mut r = DataReader::new(1000, 1 << 20);
        let mut done = None;
        for (i, b) in input.iter().enumerate() {
            if let DataProgress::Done(_) = r.feed(&[*b]) {
                done = Some(i);
            }
        }
        assert_eq!(done, Some(input.len() - 1));
        assert_eq!(r.body, b"a\r\n.b\r\n\r\n");
    }

    #[test]
    fn every_smuggling_terminator_is_a_bare_newline() {
        for variant in [
            &b"x\n.\nMAIL FROM:<a@b>\r\n"[..],
            b"x\n.\r\n",
            b"x\r\n.\n",
            b"x\r.\r\n",
            b"x\r\n.\rMAIL",
            b"x\r\n.\r",
            b"bare\rcr\r\n.\r\n",
        ] {
            let mut r = DataReader::new(1000, 1 << 20);
            let mut p = r.feed(variant);
            if p == DataProgress::NeedMore {
                p = r.feed(b"X");
            }
            assert_eq!(p, DataProgress::BareNewline, "{variant:?}");
        }
    }

    #[test]
    fn long_line_is_reported_after_the_end() {
        let mut input = vec![b'a'; 1001];
        input.extend_from_slice(b"\r\n.\r\n");
        let mut r = DataReader::new(1000, 1 << 20);
        assert!(matches!(r.feed(&input), DataProgress::Done(_)));
        assert_eq!(r.error(), Some(ContentError::LineTooLong));
    }

    #[test]
    fn oversize_is_discarded_not_buffered() {
        let mut r = DataReader::new(1000, 10);
        assert!(matches!(
            r.feed(b"0123456789abc\r\n.\r\n"),
            DataProgress::Done(_)
        ));
        assert_eq!(r.error(), Some(ContentError::TooBig));
        assert!(r.body.is_empty());
    }

    #[test]
    fn chunk_check_accepts_crlf_split_across_chunks() {
        let mut c = ChunkCheck::new(1000);
        c.feed(b"a\r");
        c.feed(b"\nb\r\n");
        assert_eq!(c.finish(), None);
    }

    #[test]
    fn chunk_check_finds_bare_lf_and_cr() {
        for bad in [&b"a\nb\r\n"[..], b"a\rb\r\n", b"a\r\n\r"] {
            let mut c = ChunkCheck::new(1000);
            c.feed(bad);
            assert_eq!(c.finish(), Some(ContentError::BareNewline), "{bad:?}");
        }
    }
}
