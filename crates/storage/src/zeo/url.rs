//! `zeo://` URLs: where the server is and how to talk to it.
//!
//! `zeo://HOST:PORT` names a TCP server, `zeo:///path/to/socket` a unix
//! socket (the rest after `zeo://` starts with `/`). Options ride as query
//! parameters so that a ZEO database is one string everywhere a database URL
//! is taken (CLI, Rust API, Python package):
//!
//! - `storage=NAME`: the storage on the server (default `1`, runzeo's);
//! - `read_only=true|false`: register read-only (also forced by an
//!   [`OpenMode`](crate::open::OpenMode) that asks for read-only);
//! - `connect_timeout=SECS`: bound on connecting plus the handshake;
//! - `timeout=SECS`: bound on every reply (a vote waits for the server's
//!   commit lock within it);
//! - `heartbeat=SECS`: idle interval after which a keep-alive is sent;
//! - `cache_size=BYTES`: the client cache's bound.
//!
//! Every wait the client does is bounded by one of these, so a server that is
//! absent or silent gives an error, never a hang.

use crate::error::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `HOST:PORT`.
    Tcp(String),
    /// A unix socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(hp) => write!(f, "zeo://{hp}"),
            Address::Unix(p) => write!(f, "zeo://{}", p.display()),
        }
    }
}

/// A parsed `zeo://` URL.
#[derive(Debug, Clone, PartialEq)]
pub struct ZeoOptions {
    /// The server.
    pub address: Address,
    /// The storage name on the server.
    pub storage: String,
    /// Register read-only.
    pub read_only: bool,
    /// Bound on connect + handshake + register.
    pub connect_timeout: Duration,
    /// Bound on every reply.
    pub timeout: Duration,
    /// Idle time after which a heartbeat is sent.
    pub heartbeat: Duration,
    /// Client cache bound in bytes.
    pub cache_size: usize,
}

impl ZeoOptions {
    /// Defaults for `address`.
    pub fn new(address: Address) -> ZeoOptions {
        ZeoOptions {
            address,
            storage: "1".into(),
            read_only: false,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            heartbeat: Duration::from_secs(10),
            cache_size: 64 << 20,
        }
    }

    /// Parse what follows `zeo://`.
    pub fn parse(rest: &str) -> Result<ZeoOptions> {
        let bad = |msg: String| Error::Protocol(format!("zeo://{rest}: {msg}"));
        let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
        let address = if addr.starts_with('/') {
            Address::Unix(PathBuf::from(addr))
        } else {
            let addr = addr.trim_end_matches('/');
            let port = addr.rsplit_once(':').map(|(_, p)| p);
            match port.map(str::parse::<u16>) {
                Some(Ok(_)) => Address::Tcp(addr.to_owned()),
                _ => {
                    return Err(bad(
                        "expected zeo://HOST:PORT or zeo:///path/to/socket".into()
                    ));
                }
            }
        };
        let mut o = ZeoOptions::new(address);
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, "true"));
            let secs = |v: &str| -> Result<Duration> {
                v.parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| bad(format!("{k}={v}: expected a positive number of seconds")))
            };
            match k {
                "storage" => o.storage = v.to_owned(),
                "read_only" => {
                    o.read_only = match v {
                        "1" | "true" | "yes" => true,
                        "0" | "false" | "no" => false,
                        _ => return Err(bad(format!("read_only={v}: expected true or false"))),
                    }
                }
                "connect_timeout" => o.connect_timeout = secs(v)?,
                "timeout" => o.timeout = secs(v)?,
                "heartbeat" => o.heartbeat = secs(v)?,
                "cache_size" => {
                    o.cache_size = v
                        .parse()
                        .map_err(|_| bad(format!("cache_size={v}: expected bytes")))?
                }
                _ => {
                    return Err(bad(format!(
                        "unknown option {k:?} (known: storage, read_only, connect_timeout, timeout, heartbeat, cache_size)"
                    )));
                }
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_unix_and_options() {
        let o = ZeoOptions::parse("127.0.0.1:8100").expect("tcp");
        assert_eq!(o.address, Address::Tcp("127.0.0.1:8100".into()));
        assert_eq!(o.storage, "1");
        let o =
            ZeoOptions::parse("/tmp/z.sock?storage=main&read_only=true&timeout=2.5").expect("unix");
        assert_eq!(o.address, Address::Unix("/tmp/z.sock".into()));
        assert_eq!(o.storage, "main");
        assert!(o.read_only);
        assert_eq!(o.timeout, Duration::from_millis(2500));
        assert!(ZeoOptions::parse("localhost").is_err());
        assert!(ZeoOptions::parse("h:1?bogus=1").is_err());
        assert!(ZeoOptions::parse("h:1?timeout=-1").is_err());
    }
}
