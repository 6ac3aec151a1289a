//! Reading one HTTP/1.1 answer without doing I/O: the caller reads bytes however it likes
//! (tokio `read_buf`, an io_uring receive) and feeds them here with the time they
//! arrived. Both engines of `gk-load run` share this, so they frame, classify and time
//! answers identically. Body bytes are counted, never kept.

use std::time::Instant;

use super::stats::{ErrorClass, Outcome};
use crate::http1::{self, ChunkedDecoder, ResponseFraming, BODY_BYTES_MAX};

/// Most reads one answer may take: bounds the read loop even for a trickling server
/// (16 MiB body cap / 1 byte per read plus the head).
pub const READS_PER_ANSWER_MAX: usize = BODY_BYTES_MAX + http1::RESPONSE_HEAD_BYTES_MAX;

/// What one successful exchange produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// The connection may be reused.
    pub keep_alive: bool,
    /// The answer was `text/event-stream`.
    pub event_stream: bool,
    /// When the first body byte arrived (streams only).
    pub first_body_at: Option<Instant>,
    /// Largest gap between two reads that carried body bytes, µs (streams only).
    pub gap_max_us: Option<u64>,
    /// Bytes read.
    pub bytes_in: u64,
}

impl Answer {
    /// Writes what this answer says into `outcome` (status, bytes, and for streams
    /// time to first byte from `intended` and the largest gap) and returns its error
    /// class: 4xx and 5xx count as errors. Shared by both engines.
    pub fn fill(&self, outcome: &mut Outcome, intended: Instant) -> Option<ErrorClass> {
        outcome.status = self.status;
        outcome.bytes_in = self.bytes_in;
        if self.event_stream {
            outcome.gap_max_us = self.gap_max_us;
            outcome.ttfb_us = self.first_body_at.map(|t| super::us(t.saturating_duration_since(intended)));
        }
        match self.status {
            400..=499 => Some(ErrorClass::Http4xx),
            500..=599 => Some(ErrorClass::Http5xx),
            _ => None,
        }
    }
}

/// A failed exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Error class.
    pub class: ErrorClass,
    /// No byte of the answer arrived (a reused connection may then be retried).
    pub nothing_read: bool,
}

/// Where the reader stands after a feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The answer is not complete; read more.
    More,
    /// The answer is complete; the connection holds no further bytes of it.
    Done(Answer),
}

/// Tracks body reads of a stream: first-byte time and the largest gap.
#[derive(Debug)]
struct BodyClock {
    track: bool,
    first: Option<Instant>,
    last: Option<Instant>,
    gap_max_us: u64,
}

impl BodyClock {
    fn body_read(&mut self, at: Instant) {
        if !self.track {
            return;
        }
        if let Some(last) = self.last {
            let gap = at.saturating_duration_since(last).as_micros();
            self.gap_max_us = self.gap_max_us.max(u64::try_from(gap).unwrap_or(u64::MAX));
        } else {
            self.first = Some(at);
        }
        self.last = Some(at);
    }
}

#[derive(Debug)]
enum Phase {
    Head,
    Length { left: usize },
    Chunked(ChunkedDecoder),
    UntilClose { have: usize },
}

/// One answer being read: the head, then the body by its framing.
#[derive(Debug)]
pub struct AnswerReader {
    phase: Phase,
    clock: BodyClock,
    answer: Answer,
    reads: usize,
}

impl Default for AnswerReader {
    fn default() -> Self {
        AnswerReader::new()
    }
}

impl AnswerReader {
    /// A reader waiting for the head.
    pub fn new() -> AnswerReader {
        AnswerReader {
            phase: Phase::Head,
            clock: BodyClock { track: false, first: None, last: None, gap_max_us: 0 },
            answer: Answer::default(),
            reads: 0,
        }
    }

    /// Bytes fed so far.
    pub fn bytes_in(&self) -> u64 {
        self.answer.bytes_in
    }

    /// The head said `text/event-stream`: a stream's body is (being) read.
    pub fn is_streaming(&self) -> bool {
        self.answer.event_stream && !matches!(self.phase, Phase::Head)
    }

    fn fail(&self, class: ErrorClass) -> Failure {
        Failure { class, nothing_read: self.answer.bytes_in == 0 }
    }

    /// A read failed (an I/O error): classifies it as a reset.
    pub fn read_failed(&self) -> Failure {
        // Refused/reset/broken pipe/aborted all mean the peer dropped us mid-exchange.
        self.fail(ErrorClass::Reset)
    }

    /// Takes `n` bytes just appended to `buf` (which also holds any unconsumed bytes of
    /// earlier reads), read at `at`. Consumes what it can from `buf`; leaves only a partial
    /// head or chunk line behind.
    pub fn feed(&mut self, buf: &mut Vec<u8>, n: usize, at: Instant) -> Result<Progress, Failure> {
        debug_assert!(n > 0 && n <= buf.len(), "feed takes the bytes of one non-empty read");
        self.answer.bytes_in += n as u64;
        self.reads += 1;
        if self.reads > READS_PER_ANSWER_MAX {
            return Err(self.fail(ErrorClass::Protocol));
        }
        match &mut self.phase {
            Phase::Head => self.feed_head(buf, at),
            Phase::Length { left } => {
                self.clock.body_read(at);
                buf.clear();
                // Bytes beyond the answer: we never pipeline, so the server misbehaved.
                *left = left.checked_sub(n).ok_or(Failure { class: ErrorClass::Protocol, nothing_read: false })?;
                Ok(if *left == 0 { self.done() } else { Progress::More })
            }
            Phase::Chunked(_) => {
                self.clock.body_read(at);
                self.feed_chunked(buf)
            }
            Phase::UntilClose { have } => {
                self.clock.body_read(at);
                buf.clear();
                *have += n;
                if *have > BODY_BYTES_MAX {
                    return Err(Failure { class: ErrorClass::Protocol, nothing_read: false });
                }
                Ok(Progress::More)
            }
        }
    }

    fn feed_head(&mut self, buf: &mut Vec<u8>, at: Instant) -> Result<Progress, Failure> {
        let (head, head_len) = match http1::parse_response_head(buf) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(Progress::More),
            Err(_) => return Err(self.fail(ErrorClass::Protocol)),
        };
        self.clock.track = head.event_stream;
        self.answer.status = head.status;
        self.answer.keep_alive = head.keep_alive;
        self.answer.event_stream = head.event_stream;
        let body_now = buf.len() - head_len;
        if body_now > 0 {
            self.clock.body_read(at);
        }
        match head.framing {
            ResponseFraming::Length(len) => {
                buf.clear();
                let left = len.checked_sub(body_now).ok_or(self.fail(ErrorClass::Protocol))?;
                self.phase = Phase::Length { left };
                Ok(if left == 0 { self.done() } else { Progress::More })
            }
            ResponseFraming::Chunked => {
                buf.drain(..head_len);
                self.phase = Phase::Chunked(ChunkedDecoder::discarding());
                self.feed_chunked(buf)
            }
            ResponseFraming::UntilClose => {
                buf.clear();
                self.answer.keep_alive = false;
                self.phase = Phase::UntilClose { have: body_now };
                Ok(Progress::More)
            }
        }
    }

    fn feed_chunked(&mut self, buf: &mut Vec<u8>) -> Result<Progress, Failure> {
        let Phase::Chunked(decoder) = &mut self.phase else {
            return Err(self.fail(ErrorClass::Protocol));
        };
        let used = decoder.feed(buf).map_err(|_| Failure { class: ErrorClass::Protocol, nothing_read: false })?;
        buf.drain(..used);
        if !decoder.is_done() {
            return Ok(Progress::More);
        }
        if !buf.is_empty() {
            // Bytes after the last chunk: we never pipeline.
            return Err(self.fail(ErrorClass::Protocol));
        }
        Ok(self.done())
    }

    fn done(&mut self) -> Progress {
        if self.clock.track {
            self.answer.first_body_at = self.clock.first;
            self.answer.gap_max_us = Some(self.clock.gap_max_us);
        }
        Progress::Done(self.answer)
    }

    /// The peer closed the connection (a read returned 0 bytes): ends an until-close
    /// body; anywhere else the answer was cut short.
    pub fn end_of_stream(&mut self) -> Result<Answer, Failure> {
        match self.phase {
            Phase::UntilClose { .. } => match self.done() {
                Progress::Done(a) => Ok(a),
                Progress::More => Err(self.fail(ErrorClass::Reset)),
            },
            _ => Err(self.fail(ErrorClass::Reset)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Feeds `raw` in pieces of `step` bytes, `gap` apart; returns the outcome.
    fn read_in_pieces(raw: &[u8], step: usize, close: bool) -> Result<Answer, Failure> {
        let t0 = Instant::now();
        let mut r = AnswerReader::new();
        let mut buf = Vec::new();
        for (i, piece) in raw.chunks(step).enumerate() {
            buf.extend_from_slice(piece);
            if let Progress::Done(a) = r.feed(&mut buf, piece.len(), t0 + Duration::from_millis(i as u64))? {
                return Ok(a);
            }
        }
        if close {
            return r.end_of_stream();
        }
        Err(Failure { class: ErrorClass::Timeout, nothing_read: false })
    }

    #[test]
    fn content_length_in_any_pieces() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        for step in 1..=raw.len() {
            let a = read_in_pieces(raw, step, false).expect("complete");
            assert_eq!((a.status, a.keep_alive, a.bytes_in), (200, true, raw.len() as u64), "step {step}");
            assert_eq!(a.first_body_at, None, "not a stream");
        }
        let extra = b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nab";
        assert_eq!(read_in_pieces(extra, 64, false).map_err(|f| f.class), Err(ErrorClass::Protocol));
    }

    #[test]
    fn chunked_stream_tracks_first_byte_and_gaps() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let head = raw.iter().position(|&b| b == b'5').expect("body");
        // One read for the head, then one per 3 body bytes, 1 ms apart.
        let t0 = Instant::now();
        let mut r = AnswerReader::new();
        let mut buf = raw[..head].to_vec();
        assert_eq!(r.feed(&mut buf, head, t0), Ok(Progress::More));
        let mut done = None;
        for (i, piece) in raw[head..].chunks(3).enumerate() {
            buf.extend_from_slice(piece);
            let at = t0 + Duration::from_millis(1 + i as u64);
            if let Progress::Done(a) = r.feed(&mut buf, piece.len(), at).expect("valid") {
                done = Some(a);
            }
        }
        let a = done.expect("complete");
        assert!(a.event_stream);
        assert_eq!(a.first_body_at, Some(t0 + Duration::from_millis(1)));
        assert_eq!(a.gap_max_us, Some(1000));
        let bad = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(read_in_pieces(bad, 7, false).map_err(|f| f.class), Err(ErrorClass::Protocol));
    }

    #[test]
    fn until_close_ends_at_eof_and_cut_answers_are_resets() {
        let raw = b"HTTP/1.0 200 OK\r\n\r\nbody bytes";
        let a = read_in_pieces(raw, 4, true).expect("complete at close");
        assert!(!a.keep_alive);
        let cut = b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nshort";
        let f = read_in_pieces(cut, 9, true).expect_err("cut");
        assert_eq!(f, Failure { class: ErrorClass::Reset, nothing_read: false });
        let mut r = AnswerReader::new();
        assert_eq!(r.end_of_stream(), Err(Failure { class: ErrorClass::Reset, nothing_read: true }));
        assert_eq!(read_in_pieces(b"garbage\r\n\r\n", 64, false).map_err(|f| f.class), Err(ErrorClass::Protocol));
    }
}
