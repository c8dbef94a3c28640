//! The one result every stage of the way in gives: go on, with the header
//! lines it adds and the folder it files the message in; or the reply that
//! refuses (5xx) or defers (4xx) it, its enhanced status code included.
//! It is the session's own [`Answer`], so the driver hands it to the
//! session as it comes, and a `Result`, so stages compose with `?` instead
//! of converting between shapes.
//!
//! This module decides nothing; it only says how stage results combine.

use portcullis_smtp::Answer;

/// What a stage lets a message go on with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accept {
    /// Header lines to prepend, in stage order, each ending in CRLF.
    pub header_lines: Vec<String>,
    /// The Maildir++ folder for local recipients (`Junk`), when a stage
    /// files the message there.
    pub folder: Option<String>,
}

/// A stage's result: `Ok` goes on with `T` (what the stage adds, the
/// transaction MAIL FROM opens, the queue id at the end of data), `Err`
/// is the reply the client gets.
pub type StageResult<T = Accept> = Answer<T>;

impl Accept {
    /// Going on with these header lines.
    pub fn with_lines(header_lines: Vec<String>) -> Accept {
        Accept {
            header_lines,
            folder: None,
        }
    }

    /// Going on into the Junk folder (DMARC quarantine).
    pub fn junk() -> Accept {
        Accept {
            header_lines: Vec::new(),
            folder: Some("Junk".to_owned()),
        }
    }

    /// This stage's additions, then a later stage's: the lines follow in
    /// order, and a later stage's folder wins.
    pub fn and(mut self, later: Accept) -> Accept {
        self.header_lines.extend(later.header_lines);
        Accept {
            header_lines: self.header_lines,
            folder: later.folder.or(self.folder),
        }
    }

    /// The header lines as they go on top of the message.
    pub fn header_block(&self) -> String {
        self.header_lines.concat()
    }
}

/// The word the log uses for a stage result about a message.
pub(crate) fn disposition(r: &StageResult) -> &'static str {
    match r {
        Ok(a) if a.folder.is_some() => "junk",
        Ok(_) => "accept",
        Err(reply) if reply.is_permanent_failure() => "reject",
        Err(_) => "defer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_smtp::{Reply, Status};

    #[test]
    fn lines_follow_in_stage_order_and_a_folder_survives() {
        let first = Accept::with_lines(vec!["A: 1\r\n".into()]);
        let second = Accept::junk();
        let third = Accept::with_lines(vec!["B: 2\r\n".into()]);
        let all = first.and(second).and(third);
        assert_eq!(all.header_block(), "A: 1\r\nB: 2\r\n");
        assert_eq!(all.folder.as_deref(), Some("Junk"));
    }

    #[test]
    fn the_log_word_follows_the_reply_class() {
        let defer = Reply::new(451, Status(4, 4, 3), "later");
        let reject = Reply::new(550, Status(5, 7, 1), "no");
        assert_eq!(disposition(&Err(defer)), "defer");
        assert_eq!(disposition(&Err(reject)), "reject");
        assert_eq!(disposition(&Ok(Accept::junk())), "junk");
        assert_eq!(disposition(&Ok(Accept::default())), "accept");
    }
}
