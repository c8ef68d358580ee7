//! A program run in a pseudo-terminal (portable-pty), driven like a
//! person at a keyboard: type text, press keys, wait for text to show.
//!
//! What the program writes is collected by a thread; [`Terminal::expect`]
//! polls it against [`DEADLINE`], with ANSI escape sequences and carriage
//! returns removed, so it matches what a person reads rather than how the
//! line editor drew it.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use portable_pty::{Child, CommandBuilder, MasterPty, PtySize, native_pty_system};

use super::DEADLINE;

/// Keys as a terminal sends them (xterm, normal cursor mode).
pub const UP: &str = "\x1b[A";
pub const DOWN: &str = "\x1b[B";
pub const RIGHT: &str = "\x1b[C";
pub const LEFT: &str = "\x1b[D";
pub const ENTER: &str = "\r";
pub const TAB: &str = "\t";
pub const CTRL_D: &str = "\x04";

pub struct Terminal {
    child: Box<dyn Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    /// Everything the program wrote, as it came.
    output: Arc<Mutex<Vec<u8>>>,
    /// How much of the readable text [`Terminal::expect`] has consumed.
    consumed: usize,
    _master: Box<dyn MasterPty + Send>,
}

impl Terminal {
    /// Starts `program` with `args` in a fresh 40x200 terminal (TERM=xterm)
    /// with the extra environment `env`.
    pub fn spawn(program: &str, args: &[&str], env: &[(&str, &OsStr)]) -> Terminal {
        let size = PtySize {
            rows: 40,
            cols: 200,
            pixel_width: 0,
            pixel_height: 0,
        };
        let pair = native_pty_system().openpty(size).expect("open a pty");
        let mut command = CommandBuilder::new(program);
        command.args(args);
        command.env("TERM", "xterm");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = pair.slave.spawn_command(command).expect("spawn in the pty");
        drop(pair.slave);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = pair.master.try_clone_reader().expect("pty reader");
        let collected = Arc::clone(&output);
        thread::spawn(move || {
            let mut buffer = [0_u8; 4096];
            while let Ok(count) = reader.read(&mut buffer) {
                if count == 0 {
                    break;
                }
                collected
                    .lock()
                    .unwrap()
                    .extend_from_slice(&buffer[..count]);
            }
        });
        let writer = pair.master.take_writer().expect("pty writer");
        Terminal {
            child,
            writer,
            output,
            consumed: 0,
            _master: pair.master,
        }
    }

    /// Types `keys` (text, or the key constants above) in one write.
    pub fn type_keys(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).expect("type");
        self.writer.flush().expect("type");
    }

    /// Waits until `text` shows after what earlier calls consumed, and
    /// consumes up to its end. Panics with the screen's text on timeout.
    pub fn expect(&mut self, text: &str) {
        let started = Instant::now();
        loop {
            let screen = self.text();
            if let Some(found) = screen[self.consumed..].find(text) {
                self.consumed += found + text.len();
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{text:?} never showed; after {:?} the terminal shows:\n{}",
                &screen[..self.consumed],
                &screen[self.consumed..]
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything shown so far as plain text: no escape sequences, no `\r`.
    pub fn text(&self) -> String {
        let output = self.output.lock().unwrap();
        plain_text(&output)
    }

    /// Waits for the program to exit and returns its exit code.
    pub fn wait_exit(&mut self) -> u32 {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.exit_code();
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the program did not exit; it shows:\n{}",
                self.text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bytes` without ANSI escape sequences (CSI `ESC [ ... final`, OSC
/// `ESC ] ... BEL`, and two-byte `ESC x`) and without carriage returns.
fn plain_text(bytes: &[u8]) -> String {
    let mut text = Vec::with_capacity(bytes.len());
    let mut position = 0;
    while position < bytes.len() {
        match (bytes[position], bytes.get(position + 1)) {
            (0x1b, Some(b'[')) => {
                position += 2;
                while position < bytes.len() && !(0x40..=0x7e).contains(&bytes[position]) {
                    position += 1;
                }
                position += 1;
            }
            (0x1b, Some(b']')) => {
                while position < bytes.len() && bytes[position] != 0x07 {
                    position += 1;
                }
                position += 1;
            }
            (0x1b, _) => position += 2,
            (b'\r', _) => position += 1,
            (byte, _) => {
                text.push(byte);
                position += 1;
            }
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}
