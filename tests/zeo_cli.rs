//! The CLI against a ZEO server: `wendelin import zeo://...` stores an
//! array that a Python ZODB `ClientStorage` client on the same server reads
//! (with the stand-ins of wendelin.core's classes), and `ls` lists it.

mod common;

use std::process::Command;
use testsupport::zeo::ZeoServer;

fn ok(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_wendelin"))
        .args(args)
        .output()
        .expect("run");
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn import_into_zeo_reads_in_python_clientstorage() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let srv = ZeoServer::start(d);
    common::run_python(
        d,
        &format!(
            "import numpy as np\nnp.save(r'{}/a.npy', np.arange(600000, dtype='<f8').reshape(600, 1000) * 0.5)\n",
            d.display()
        ),
        &[],
    );
    let url = srv.url();
    let npy = d.join("a.npy");
    ok(&["import", &url, "A", npy.to_str().expect("utf8")]);
    assert!(ok(&["ls", &url]).contains('A'));
    let (host, port) = url
        .trim_start_matches("zeo://")
        .rsplit_once(':')
        .expect("host:port");
    let script = format!(
        "import numpy as np\nfrom ZODB import DB\nfrom ZEO.ClientStorage import ClientStorage\nfrom wendelin.bigarray.array_zodb import to_numpy\nroot = DB(ClientStorage(('{host}', {port}), wait_timeout=30)).open().root()\na = to_numpy(root['A'])\nassert a.shape == (600, 1000) and (a == np.arange(600000, dtype='<f8').reshape(600, 1000) * 0.5).all()\nprint('OK')\n"
    );
    use testsupport::standins::{ARRAY_ZODB, FILE_ZODB};
    let out = testsupport::python::run_python_with(d, &script, &[], &[FILE_ZODB, ARRAY_ZODB]);
    assert!(out.contains("OK"), "{out}");
}
