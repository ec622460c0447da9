//! The byte level of ZEO: a stream (TCP or unix socket), sized frames and the
//! protocol handshake.
//!
//! # Model
//!
//! Every ZEO message is a frame: a 4-byte big-endian length, then that many
//! payload bytes (ZEO's `smp.py`). The server speaks first: its first frame
//! is the protocol it offers, `Z5` (messages are pickles) or `M5` (msgpack,
//! when the server runs with msgpack enabled). The client answers with the
//! protocol it will use; the server then decodes with whatever the client
//! announced (`ServerProtocol.finish_connection` builds its codec from the
//! client's answer), so answering `Z5` works with both kinds of server. A
//! version other than `5` is a protocol mismatch and an error.
//!
//! Reads happen on one thread with a read timeout (so it can send
//! heartbeats), so a read may stop in the middle of a frame: [`FrameReader`]
//! keeps the partial frame across timeouts instead of losing bytes.

use super::url::Address;
use crate::error::{Error, Result};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Largest frame accepted from the server (a record plus overhead).
pub const MAX_FRAME: usize = 1 << 31;

/// The protocol this client speaks.
pub const PROTOCOL: &[u8] = b"Z5";

/// A connected socket.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix socket.
    Unix(UnixStream),
}

/// An I/O error on the server connection, as a storage error naming the server.
pub fn net_err(addr: &Address, op: &'static str, e: io::Error) -> Error {
    Error::io(addr.to_string(), op, e)
}

impl Stream {
    /// Connect within `timeout`.
    pub fn connect(addr: &Address, timeout: Duration) -> Result<Stream> {
        match addr {
            Address::Tcp(hp) => {
                let addrs = hp
                    .to_socket_addrs()
                    .map_err(|e| net_err(addr, "resolve", e))?;
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                for a in addrs {
                    match TcpStream::connect_timeout(&a, timeout) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            return Ok(Stream::Tcp(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(net_err(addr, "connect", last))
            }
            // A unix connect does not block on an absent server: it fails at once.
            Address::Unix(p) => UnixStream::connect(p)
                .map(Stream::Unix)
                .map_err(|e| net_err(addr, "connect", e)),
        }
    }

    /// Another handle on the same socket (one for the reader, one for writers).
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    /// Bound every read.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    /// Bound every write.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }

    /// Close both directions (wakes the reader thread).
    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// Write one frame (length prefix and payload in one write call).
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let n = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&n.to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)
}

/// Reads frames, keeping a partial frame across read timeouts.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

/// What one [`FrameReader::read`] produced.
pub enum Read1 {
    /// A whole frame.
    Frame(Vec<u8>),
    /// The read timed out; call again.
    Idle,
}

impl FrameReader {
    /// Read until one whole frame is buffered, or the stream's read timeout
    /// passes. EOF is an `UnexpectedEof` error.
    pub fn read(&mut self, r: &mut impl Read) -> io::Result<Read1> {
        let mut tmp = [0u8; 64 * 1024];
        loop {
            if let Some(f) = self.take() {
                return f.map(Read1::Frame);
            }
            match r.read(&mut tmp) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by the server",
                    ));
                }
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(Read1::Idle);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn take(&mut self) -> Option<io::Result<Vec<u8>>> {
        let hdr: [u8; 4] = self.buf.get(..4)?.try_into().ok()?;
        let n = u32::from_be_bytes(hdr) as usize;
        if n > MAX_FRAME {
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {n} bytes is larger than {MAX_FRAME}"),
            )));
        }
        if self.buf.len() < 4 + n {
            if self.buf.capacity() < 4 + n {
                self.buf.reserve(4 + n - self.buf.len());
            }
            return None;
        }
        let rest = self.buf.split_off(4 + n);
        let mut frame = std::mem::replace(&mut self.buf, rest);
        frame.drain(..4);
        Some(Ok(frame))
    }
}

/// Read the server's protocol offer and answer it, within `deadline`.
/// Returns the server's offer.
pub fn handshake(
    stream: &mut Stream,
    reader: &mut FrameReader,
    addr: &Address,
    deadline: Instant,
) -> Result<Vec<u8>> {
    let offer = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(net_err(
                addr,
                "handshake",
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the server sent no protocol offer in time (is it a ZEO server?)",
                ),
            ));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| net_err(addr, "handshake", e))?;
        match reader
            .read(stream)
            .map_err(|e| net_err(addr, "handshake", e))?
        {
            Read1::Frame(f) => break f,
            Read1::Idle => {}
        }
    };
    let ok = offer.len() == 2 && matches!(offer[0], b'Z' | b'M') && offer[1] == b'5';
    if !ok {
        return Err(Error::Protocol(format!(
            "{addr}: protocol mismatch: the server offers {:?}, this client speaks ZEO 5 (Z5 or M5)",
            String::from_utf8_lossy(&offer)
        )));
    }
    write_frame(stream, PROTOCOL).map_err(|e| net_err(addr, "handshake", e))?;
    Ok(offer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_partial_reads() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello").expect("w");
        write_frame(&mut wire, b"").expect("w");
        let mut fr = FrameReader::default();
        // Feed one byte at a time.
        struct OneByte<'a>(&'a [u8]);
        impl Read for OneByte<'_> {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                b[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let mut r = OneByte(&wire);
        let mut got = Vec::new();
        while let Ok(Read1::Frame(f)) = fr.read(&mut r) {
            got.push(f);
        }
        assert_eq!(got, vec![b"hello".to_vec(), Vec::new()]);
    }
}
