//! DATA (RFC 5321 4.1.1.4) and BDAT (RFC 3030): reading the content and
//! handing the finished transaction to the driver.

use super::{Action, Answer, Mode, Pending, Session};
use crate::framing::{ChunkCheck, ContentError, DataProgress, DataReader};
use crate::reply::{Reply, Status, canned};

impl<X> Session<X> {
    /// Why a transaction cannot take content now, if it cannot.
    fn content_refusal(&self, verb: &str) -> Option<Reply> {
        match &self.txn {
            None => Some(canned::bad_sequence(&format!(
                "Need MAIL and RCPT before {verb}"
            ))),
            // 3.3: DATA with no accepted recipient is 554 (or 503).
            Some(t) if t.recipients.is_empty() => {
                Some(Reply::new(554, Status(5, 5, 1), "No valid recipients"))
            }
            Some(_) => None,
        }
    }

    pub(super) fn data(&mut self) {
        if self.chunk_check.is_some() {
            return self.fail(canned::bad_sequence("DATA not allowed after BDAT"));
        }
        if let Some(r) = self.content_refusal("DATA") {
            return self.fail(r);
        }
        self.reply(Reply::bare(354, "End data with <CR><LF>.<CR><LF>"));
        let l = &self.cfg.limits;
        self.mode = Mode::Data(Box::new(DataReader::new(l.text_line, l.max_message_size)));
    }

    pub(super) fn step_data(&mut self) -> bool {
        let Mode::Data(reader) = &mut self.mode else {
            return false;
        };
        match reader.feed(&self.input[self.pos..]) {
            DataProgress::NeedMore => {
                self.pos = self.input.len();
                false
            }
            DataProgress::BareNewline => {
                self.mode = Mode::Command;
                self.reset_txn();
                self.close_with(canned::bare_newline_in_data());
                true
            }
            DataProgress::Done(n) => {
                self.pos += n;
                let Mode::Data(reader) = std::mem::replace(&mut self.mode, Mode::Command) else {
                    return true;
                };
                match reader.error() {
                    Some(e) => self.content_failed(e),
                    None => self.deliver(reader.body),
                }
                true
            }
        }
    }

    pub(super) fn bdat(&mut self, size: u64, last: bool) {
        let refusal = self.content_refusal("BDAT").or_else(|| {
            let so_far = self.txn.as_ref().map_or(0, |t| t.body.len() as u64);
            let limit = self.cfg.limits.max_message_size;
            (so_far.saturating_add(size) > limit).then(|| canned::size_exceeded(limit))
        });
        if refusal.is_none() && self.chunk_check.is_none() {
            self.chunk_check = Some(ChunkCheck::new(self.cfg.limits.text_line));
        }
        // The chunk's octets follow the command whatever we think of it:
        // read them (and drop them) to stay in step with the client.
        self.chunk_error = refusal;
        self.mode = Mode::Chunk {
            remaining: size,
            last,
        };
    }

    pub(super) fn step_chunk(&mut self) -> bool {
        let Mode::Chunk { remaining, last } = &mut self.mode else {
            return false;
        };
        let avail = self.input.len() - self.pos;
        let take = (*remaining).min(avail as u64) as usize;
        *remaining -= take as u64;
        let (done, last) = (*remaining == 0, *last);
        let bytes = &self.input[self.pos..self.pos + take];
        self.pos += take;
        if self.chunk_error.is_none()
            && let (Some(txn), Some(check)) = (&mut self.txn, &mut self.chunk_check)
        {
            check.feed(bytes);
            txn.body.extend_from_slice(bytes);
        }
        if !done {
            return false;
        }
        self.mode = Mode::Command;
        self.chunk_finished(last);
        true
    }

    fn chunk_finished(&mut self, last: bool) {
        if let Some(r) = self.chunk_error.take() {
            // RFC 3030 2: a failed chunk ends the transaction.
            self.reset_txn();
            self.chunk_check = None;
            return self.fail(r);
        }
        if !last {
            let size = self.txn.as_ref().map_or(0, |t| t.body.len());
            return self.reply(Reply::new(
                250,
                Status(2, 0, 0),
                format!("{size} octets received"),
            ));
        }
        let verdict = self.chunk_check.take().and_then(|mut c| c.finish());
        match verdict {
            Some(e) => self.content_failed(e),
            None => {
                let body = self
                    .txn
                    .as_mut()
                    .map(|t| std::mem::take(&mut t.body))
                    .unwrap_or_default();
                self.deliver(body);
            }
        }
    }

    fn content_failed(&mut self, e: ContentError) {
        self.reset_txn();
        let l = &self.cfg.limits;
        let r = match e {
            ContentError::TooBig => canned::size_exceeded(l.max_message_size),
            ContentError::LineTooLong => Reply::new(
                554,
                Status(5, 6, 0),
                format!(
                    "Message refused: a line is longer than {} octets (RFC 5321 4.5.3.1.6)",
                    l.text_line
                ),
            ),
            ContentError::BareNewline => Reply::new(
                554,
                Status(5, 6, 0),
                "Message refused: bare LF or CR in message content, lines must end with CRLF (RFC 5321 2.3.8)",
            ),
        };
        self.fail(r);
    }

    fn deliver(&mut self, body: Vec<u8>) {
        let Some(mut txn) = self.txn.take() else {
            return self.fail(canned::bad_sequence("No transaction"));
        };
        txn.body = body;
        self.out.push_back(Action::Deliver(Box::new(txn)));
        self.pending = Some(Pending::Data);
    }

    /// The driver's answer to `Deliver`: the queue id once the message is
    /// on disk (250), or the reason it is not.
    pub fn answer_data(&mut self, answer: Answer<String>) {
        if matches!(self.pending, Some(Pending::Data)) {
            self.pending = None;
            match answer {
                Ok(id) => self.reply(canned::queued(&id)),
                Err(reply) => self.fail(reply),
            }
        }
    }
}
