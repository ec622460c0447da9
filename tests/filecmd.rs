//! `wendelin file cat|info` on the ZBigFile of wendelin's test databases.

use serde_json::Value as J;
use sha2::{Digest, Sha256};
use std::process::Command;

use testsupport::testdata;

fn wendelin(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wendelin"))
        .args(args)
        .output()
        .expect("run")
}

#[test]
fn file_cat_and_info_agree_with_the_json() {
    for f in ["zblk/py3_pickle3/zblk", "zblk/py2_pickle3/zblk"] {
        let fs = testdata().join(format!("{f}.fs"));
        let fs = fs.to_str().expect("utf8");
        let js: J = serde_json::from_slice(
            &std::fs::read(testdata().join(format!("{f}.json"))).expect("json"),
        )
        .expect("parse");
        let want = &js["zbigfiles"]["0000000000000001"];
        let out = wendelin(&["file", "cat", fs, "zbigf"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(Some(out.stdout.len() as u64), want["size"].as_u64());
        let bs = want["blksize"].as_u64().expect("bs") as usize;
        for (i, block) in out.stdout.chunks(bs).enumerate() {
            match want["blocks"].get(i.to_string()) {
                Some(b) => assert_eq!(
                    Some(hex::encode(Sha256::digest(block)).as_str()),
                    b["sha256_full_block"].as_str()
                ),
                None => assert!(block.iter().all(|&x| x == 0)),
            }
        }
        // the same through oid:
        let by_oid = wendelin(&["file", "cat", fs, "oid:0x1"]);
        assert_eq!(by_oid.stdout, out.stdout);
        let info = wendelin(&["file", "info", fs, "zbigf", "--json"]);
        assert!(info.status.success());
        let i: J = serde_json::from_slice(&info.stdout).expect("json");
        assert_eq!(i["blksize"], want["blksize"]);
        assert_eq!(i["size"], want["size"]);
        assert_eq!(i["blocks"], 4);
        assert_eq!(
            (
                i["zblk0"].as_u64(),
                i["zblk1"].as_u64(),
                i["holes"].as_u64()
            ),
            (Some(1), Some(1), Some(2))
        );
    }
    // errors: one line, exit 1
    let fs = testdata().join("zblk/py3_pickle3/zblk.fs");
    let out = wendelin(&["file", "info", fs.to_str().expect("utf8"), "zblk0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a wendelin.bigfile.file_zodb.ZBigFile"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1);
}
