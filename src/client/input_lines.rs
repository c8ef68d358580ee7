//! The input of pipe mode, read line by line on a thread of its own, so
//! that replies are printed as they come even while the input waits (a
//! script that writes a request and reads its reply before writing the
//! next).
//!
//! The thread hands lines over in batches (what one fill of its buffer
//! held, at most [`BATCH_LINES`]), and wakes the pipeline's poll once per
//! batch rather than once per line. It is bounded: [`QUEUE_BATCHES`]
//! batches wait at most, then the thread waits; a line longer than a
//! request may be ends the input ([`InputLine::TooLong`]).

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread;

use mio::Waker;

use super::MAX_LINE_LENGTH;

/// Most lines in one batch.
pub const BATCH_LINES: usize = 1024;
/// Most batches read ahead of the pipeline.
pub const QUEUE_BATCHES: usize = 16;
const BUFFER_BYTES: usize = 64 * 1024;

/// One step of the input.
#[derive(Debug)]
pub enum InputLine {
    /// A line without its `\n` or `\r\n`.
    Line(Vec<u8>),
    /// A line longer than [`MAX_LINE_LENGTH`]; nothing after it is read.
    TooLong,
    Failed(io::Error),
    End,
}

/// What the thread sends: lines, or how the input ended.
enum Message {
    Lines(Vec<Vec<u8>>),
    Last(InputLine),
}

/// The receiving end.
pub struct InputLines {
    receiver: Receiver<Message>,
    pending: VecDeque<Vec<u8>>,
}

impl InputLines {
    /// Starts reading `input`; `waker` is woken after each batch.
    pub fn spawn(input: impl Read + Send + 'static, waker: Arc<Waker>) -> InputLines {
        let (sender, receiver) = mpsc::sync_channel(QUEUE_BATCHES);
        thread::spawn(move || {
            read_all(
                BufReader::with_capacity(BUFFER_BYTES, input),
                &sender,
                &waker,
            )
        });
        InputLines {
            receiver,
            pending: VecDeque::new(),
        }
    }

    /// The next step, or `None` when no line has been read yet.
    pub fn try_next(&mut self) -> Option<InputLine> {
        if let Some(line) = self.pending.pop_front() {
            return Some(InputLine::Line(line));
        }
        match self.receiver.try_recv() {
            Ok(Message::Lines(lines)) => {
                self.pending = lines.into();
                self.pending.pop_front().map(InputLine::Line)
            }
            Ok(Message::Last(last)) => Some(last),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(InputLine::End),
        }
    }

    /// Whether the input is known to have no line left (without waiting).
    /// Lines that arrive meanwhile stay for [`InputLines::try_next`].
    pub fn is_known_to_end(&mut self) -> bool {
        if !self.pending.is_empty() {
            return false;
        }
        match self.receiver.try_recv() {
            Ok(Message::Lines(lines)) => {
                self.pending = lines.into();
                false
            }
            Ok(Message::Last(InputLine::End)) | Err(TryRecvError::Disconnected) => true,
            Ok(Message::Last(_)) | Err(TryRecvError::Empty) => false,
        }
    }
}

/// The thread: batches of lines until the end, an error or a line too long.
fn read_all(mut input: BufReader<impl Read>, sender: &SyncSender<Message>, waker: &Waker) {
    loop {
        let mut batch = Vec::new();
        let last = loop {
            match read_line(&mut input) {
                InputLine::Line(line) => batch.push(line),
                last => break Some(last),
            }
            if input.buffer().is_empty() || batch.len() == BATCH_LINES {
                break None;
            }
        };
        if !batch.is_empty() && !send(sender, waker, Message::Lines(batch)) {
            return;
        }
        if let Some(last) = last {
            send(sender, waker, Message::Last(last));
            return;
        }
    }
}

/// `false` once the receiver is gone.
fn send(sender: &SyncSender<Message>, waker: &Waker, message: Message) -> bool {
    sender.send(message).is_ok() && waker.wake().is_ok()
}

fn read_line(input: &mut impl BufRead) -> InputLine {
    let mut line = Vec::new();
    // The longest line, its "\r\n", and one byte to notice it is longer.
    let limit = (MAX_LINE_LENGTH + 3) as u64;
    match Read::take(&mut *input, limit).read_until(b'\n', &mut line) {
        Err(error) => InputLine::Failed(error),
        Ok(0) => InputLine::End,
        Ok(_) if line.last() == Some(&b'\n') || (line.len() as u64) < limit => {
            if line.pop_if(|byte| *byte == b'\n').is_some() {
                line.pop_if(|byte| *byte == b'\r');
            }
            InputLine::Line(line)
        }
        Ok(_) => InputLine::TooLong,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &[u8]) -> Vec<String> {
        let mut reader = BufReader::new(input);
        let mut lines = Vec::new();
        loop {
            match read_line(&mut reader) {
                InputLine::Line(line) => lines.push(String::from_utf8(line).unwrap()),
                InputLine::End => return lines,
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn lines_end_at_a_newline_or_crlf_and_the_last_may_lack_one() {
        assert_eq!(lines_of(b"a\nb\r\n\nc\r\r\nd"), ["a", "b", "", "c\r", "d"]);
    }

    #[test]
    fn a_line_longer_than_a_request_is_too_long() {
        let mut input = vec![b'x'; MAX_LINE_LENGTH + 3];
        input.push(b'\n');
        assert!(matches!(
            read_line(&mut BufReader::new(&input[..])),
            InputLine::TooLong
        ));
        let fits = vec![b'x'; MAX_LINE_LENGTH];
        let mut reader = BufReader::new(&fits[..]);
        assert!(
            matches!(read_line(&mut reader), InputLine::Line(line) if line.len() == MAX_LINE_LENGTH)
        );
    }
}
