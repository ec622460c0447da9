//! Many writers (issue 11): N processes edit and append to two arrays of one
//! database for a bounded time, each logging what its committed transactions
//! wrote. Afterwards the log, replayed in the file's tid order, must give
//! exactly the final arrays (no lost update), every reported commit must be
//! in the file, and Python ZODB's fstest must accept the file.

mod common;

use bigarray::{Order, ZBigArray};
use bigfile::HandleOptions;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use storage::{DB, Tid, TransactionManager};

const PROCS: usize = 4;
const X_LEN: usize = 1 << 19; // 4 MiB of u64: two blocks
const SECS: u64 = 20;

fn opts() -> HandleOptions {
    HandleOptions {
        format: bigfile::ZBlkFormat::default(),
        virtmem: virtmem::Options::default(),
        spill_threshold: None,
    }
}

/// Child: random edits of X and appends to Y, one transaction each, for
/// `SECS` seconds; prints `desc edits` lines for committed transactions.
#[test]
fn child_stress_writer() {
    let Some(path) = std::env::var_os("WENDELIN_STRESS_CHILD") else {
        return;
    };
    let me: u64 = std::env::var("WENDELIN_STRESS_ID")
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("id");
    let db = DB::open(Path::new(&path).to_str().expect("utf8")).expect("open");
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let mut rng = me.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let deadline = Instant::now() + Duration::from_secs(SECS);
    let mut k = 0u64;
    while Instant::now() < deadline {
        k += 1;
        let desc = format!("stress {me} {k}");
        let root = |n: &str| {
            c.root()
                .expect("root")
                .get(n)
                .and_then(|v| v.ref_oid())
                .expect("array")
        };
        let append = next() % 3 == 0;
        let mut log = Vec::new();
        let r = (|| -> Result<(), String> {
            if append {
                let y = ZBigArray::<u64>::open(&c, &tm, root("Y"), opts())
                    .map_err(|e| e.to_string())?;
                let n = (next() % 100 + 1) as usize;
                let vals: Vec<u64> = (0..n as u64).map(|i| (me << 48) | (k << 16) | i).collect();
                y.append(ndarray::ArrayView1::from(&vals[..]).into_dyn())
                    .map_err(|e| e.to_string())?;
                log.push(format!(
                    "A {}",
                    vals.iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ));
            } else {
                let x = ZBigArray::<u64>::open(&c, &tm, root("X"), opts())
                    .map_err(|e| e.to_string())?;
                let edits: Vec<(usize, u64)> = (0..(next() % 8 + 1))
                    .map(|_| ((next() % X_LEN as u64) as usize, (me << 48) | k))
                    .collect();
                x.with_view_mut(|mut v| {
                    for &(i, val) in &edits {
                        v[[i]] = val;
                    }
                })
                .map_err(|e| e.to_string())?;
                for (i, v) in edits {
                    log.push(format!("E {i} {v}"));
                }
            }
            tm.note(&desc);
            tm.commit().map_err(|e| e.to_string())
        })();
        match r {
            Ok(()) => println!("{desc}|{}", log.join(";")),
            Err(e) if e.contains("conflict") => tm.abort(),
            Err(e) => panic!("{desc}: {e}"),
        }
    }
}

#[test]
fn many_writers_lose_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("db.fs");
    {
        let db = DB::open(path.to_str().expect("utf8")).expect("open");
        let tm = TransactionManager::new();
        let c = db.open_connection(&tm).expect("conn");
        for (n, len) in [("X", X_LEN), ("Y", 0)] {
            let a = ZBigArray::<u64>::create(&c, &tm, &[len], Order::C, opts()).expect("create");
            let r = c.ref_to(a.oid()).expect("ref");
            c.root_mut().expect("root").insert(n, r);
        }
        tm.commit().expect("commit");
    }
    let children: Vec<_> = (0..PROCS)
        .map(|i| {
            Command::new(std::env::current_exe().expect("exe"))
                .args([
                    "--exact",
                    "child_stress_writer",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("WENDELIN_STRESS_CHILD", &path)
                .env("WENDELIN_STRESS_ID", (i + 1).to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut committed: HashMap<String, String> = HashMap::new();
    for ch in children {
        let o = ch.wait_with_output().expect("wait");
        assert!(o.status.success(), "a writer failed");
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            // libtest's own "test ... " may precede the first line
            let l = l.find("stress ").map_or(l, |i| &l[i..]);
            if let Some((d, log)) = l.split_once('|') {
                committed.insert(d.to_owned(), log.to_owned());
            }
        }
    }
    // the file's order of the reported commits
    let db = DB::open_read_only(path.to_str().expect("utf8")).expect("open");
    let mut order = Vec::new();
    for t in db.storage().iter_txns(Tid::ZERO, Tid::MAX).expect("iter") {
        let t = t.expect("txn");
        let d = String::from_utf8_lossy(&t.meta.description).into_owned();
        if committed.contains_key(&d) {
            order.push(d);
        }
    }
    let all: Vec<String> = db
        .storage()
        .iter_txns(Tid::ZERO, Tid::MAX)
        .expect("iter")
        .filter_map(|t| t.ok())
        .map(|t| String::from_utf8_lossy(&t.meta.description).into_owned())
        .collect();
    let missing: Vec<_> = committed
        .iter()
        .filter(|(d, _)| !order.contains(d))
        .map(|(d, l)| {
            let near: Vec<_> = all.iter().filter(|a| a.contains(d.as_str())).collect();
            format!(
                "{d}: {} / in file as {near:?}",
                l.chars().take(60).collect::<String>()
            )
        })
        .collect();
    assert!(
        missing.is_empty(),
        "reported commits missing from the file: {missing:#?}"
    );
    let mut x = vec![0u64; X_LEN];
    let mut y = Vec::new();
    for d in &order {
        for op in committed[d].split(';').filter(|s| !s.is_empty()) {
            let mut w = op.split(' ');
            match (w.next(), w.next(), w.next()) {
                (Some("E"), Some(i), Some(v)) => {
                    x[i.parse::<usize>().expect("i")] = v.parse().expect("v")
                }
                (Some("A"), Some(vs), None) => {
                    y.extend(vs.split(',').map(|v| v.parse::<u64>().expect("v")))
                }
                _ => panic!("bad log {op}"),
            }
        }
    }
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let get = |n: &str| {
        let oid = c
            .root()
            .expect("root")
            .get(n)
            .and_then(|v| v.ref_oid())
            .expect("arr");
        let a = ZBigArray::<u64>::open_read_only(&c, oid, opts()).expect("open");
        a.with_view(|v| v.iter().copied().collect::<Vec<u64>>())
            .expect("view")
    };
    assert!(get("X") == x, "X differs from the replayed log");
    assert!(get("Y") == y, "Y differs from the replayed log");
    eprintln!(
        "stress: {PROCS} processes, {} commits ({} appends, Y has {} elements)",
        order.len(),
        committed.values().filter(|l| l.starts_with('A')).count(),
        y.len()
    );
    let out = common::run_python(
        dir.path(),
        "import sys\nfrom ZODB.scripts import fstest\nfstest.check(sys.argv[1])\nprint('ok')\n",
        &[path.to_str().expect("utf8")],
    );
    assert!(out.contains("ok"));
}
