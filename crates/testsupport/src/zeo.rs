//! A real ZEO server (`runzeo` from the interop venv) for tests.
//!
//! [`ZeoServer::start`] runs `runzeo` serving `DIR/Data.fs` on 127.0.0.1 and a
//! free port (through a configuration file, so that tests can add server
//! options) (or on a unix socket with [`ZeoServer::start_unix`]), waits until
//! it accepts connections, and kills it on drop, so no test leaves a server
//! behind. [`ZeoServer::restart`] kills and starts it again on the same
//! address and file (the server-restart scenarios). `runzeo` is looked up next
//! to the interop Python ([`crate::python::python`]); a missing one panics with
//! the fix (install ZEO into the venv: `.ci/setup-python.sh` does).

use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `runzeo`.
pub struct ZeoServer {
    child: Option<Child>,
    addr: String,
    data: PathBuf,
    log: PathBuf,
    conf: PathBuf,
}

/// The `runzeo` script next to the interop Python.
pub fn runzeo() -> PathBuf {
    let py = crate::python::python();
    let p = py.with_file_name("runzeo");
    assert!(
        p.exists(),
        "ZEO tests need runzeo next to {}: run `bash .ci/setup-python.sh` (installs ZEO) or `pip install ZEO` into that venv",
        py.display()
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl ZeoServer {
    /// Serve `dir/Data.fs` on 127.0.0.1 and a free port.
    pub fn start(dir: &Path) -> ZeoServer {
        ZeoServer::start_with(dir, &[])
    }

    /// [`ZeoServer::start`] with extra lines for the `<zeo>` section of the
    /// server configuration (e.g. `read-only true`,
    /// `client-conflict-resolution true`).
    pub fn start_with(dir: &Path, zeo_options: &[&str]) -> ZeoServer {
        let addr = format!("127.0.0.1:{}", free_port());
        ZeoServer::start_at(dir, addr, zeo_options)
    }

    /// [`ZeoServer::start_unix`] if `unix`, else [`ZeoServer::start`]: for
    /// tests that run once over each transport.
    pub fn start_on(dir: &Path, unix: bool) -> ZeoServer {
        if unix {
            ZeoServer::start_unix(dir)
        } else {
            ZeoServer::start(dir)
        }
    }

    /// Serve `dir/Data.fs` on the unix socket `dir/zeo.sock`.
    pub fn start_unix(dir: &Path) -> ZeoServer {
        let sock = dir.join("zeo.sock");
        ZeoServer::start_at(dir, sock.to_string_lossy().into_owned(), &[])
    }

    fn start_at(dir: &Path, addr: String, zeo_options: &[&str]) -> ZeoServer {
        let data = dir.join("Data.fs");
        let conf = dir.join("zeo.conf");
        let text = format!(
            "<zeo>\n  address {addr}\n{}</zeo>\n<filestorage 1>\n  path {}\n</filestorage>\n",
            zeo_options
                .iter()
                .map(|l| format!("  {l}\n"))
                .collect::<String>(),
            data.display()
        );
        std::fs::write(&conf, text).expect("zeo.conf");
        let mut s = ZeoServer {
            child: None,
            addr,
            data,
            log: dir.join("runzeo.log"),
            conf,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("runzeo log");
        let log2 = log.try_clone().expect("log");
        let child = Command::new(runzeo())
            .arg("-C")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .expect("start runzeo");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = if self.addr.starts_with('/') {
                UnixStream::connect(&self.addr).is_ok()
            } else {
                TcpStream::connect(&self.addr).is_ok()
            };
            if up {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!(
                    "runzeo exited ({st}):\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "runzeo did not listen on {} within 30s:\n{}",
                self.addr,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The database URL: `zeo://127.0.0.1:PORT` or `zeo:///path/zeo.sock`.
    pub fn url(&self) -> String {
        format!("zeo://{}", self.addr)
    }

    /// The served FileStorage.
    pub fn data_fs(&self) -> &Path {
        &self.data
    }

    /// Kill the server (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.addr.starts_with('/') {
            let _ = std::fs::remove_file(&self.addr);
        }
    }

    /// Start it again on the same address and file (after [`ZeoServer::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        // The FileStorage lock of the killed process is gone with it.
        self.spawn();
    }
}

impl Drop for ZeoServer {
    fn drop(&mut self) {
        self.kill();
    }
}
