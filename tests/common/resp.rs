//! A bare RESP client for byte-exact tests: it encodes requests and returns
//! each reply's raw bytes, reading exactly one whole reply (nested arrays,
//! maps and sets included) so that the next one starts where it stopped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct RespConnection {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

/// One RESP request: an array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl RespConnection {
    pub fn open(address: SocketAddr) -> RespConnection {
        let stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        RespConnection { stream, reader }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends `args` and returns the raw bytes of the reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(&encode(args));
        self.reply()
    }

    /// [`RespConnection::call`] with the arguments split on spaces.
    pub fn cmd(&mut self, line: &str) -> Vec<u8> {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        self.call(&args)
    }

    /// The raw bytes of the next whole reply.
    pub fn reply(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.read_value(&mut out);
        out
    }

    fn read_line(&mut self, out: &mut Vec<u8>) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).unwrap();
        assert!(
            line.ends_with(b"\r\n"),
            "reply line {:?}",
            String::from_utf8_lossy(&line)
        );
        out.extend_from_slice(&line);
        line.truncate(line.len() - 2);
        line
    }

    fn read_value(&mut self, out: &mut Vec<u8>) {
        let line = self.read_line(out);
        let count = || -> i64 { std::str::from_utf8(&line[1..]).unwrap().parse().unwrap() };
        match line.first() {
            Some(b'$') | Some(b'=') if count() >= 0 => {
                let mut body = vec![0; count() as usize + 2];
                self.reader.read_exact(&mut body).unwrap();
                out.extend_from_slice(&body);
            }
            Some(b'*') | Some(b'~') | Some(b'>') => {
                for _ in 0..count().max(0) {
                    self.read_value(out);
                }
            }
            Some(b'%') => {
                for _ in 0..count() * 2 {
                    self.read_value(out);
                }
            }
            Some(b'+' | b'-' | b':' | b'_' | b'$' | b'#' | b',') => {}
            other => panic!(
                "not a RESP reply: {other:?} in {:?}",
                String::from_utf8_lossy(&line)
            ),
        }
    }

    /// Everything until the server closes the connection.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
        rest
    }
}
