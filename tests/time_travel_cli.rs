//! `--at TID|ISO-8601-TIME` on ls, export, stat, file cat and file info:
//! each transaction of a history shows exactly what was committed then;
//! before a pack's horizon the commands refuse with a clear error; `stat`
//! handles big-endian arrays holding data.

mod common;

use common::{ok, wendelin};
use wendelin::ZBigArray;
use wendelin::bigarray::{ArrayState, DType, Order};
use wendelin::storage::Tid;

/// A database whose array "A" (f8, 4 x 1000) holds `k` everywhere after
/// its k-th transaction (k = 1..=3); returns the tids.
fn history(path: &str) -> Vec<Tid> {
    let db = wendelin::open(path).expect("open");
    let conn = db.open().expect("conn");
    let a: ZBigArray<f64> = conn.create_array("A", &[4, 1000], Order::C).expect("A");
    let mut tids = Vec::new();
    for k in 1..=3 {
        a.with_view_mut(|mut v| v.fill(f64::from(k))).expect("fill");
        tids.push(conn.commit().expect("commit"));
    }
    tids
}

/// Values of an .npy of f8 written by `wendelin export`.
fn npy_values(p: &std::path::Path) -> Vec<f64> {
    let b = std::fs::read(p).expect("npy");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    b[10 + hlen..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8")))
        .collect()
}

#[test]
fn every_transaction_reads_as_it_was_committed() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("h.fs");
    let dbs = db.to_str().expect("utf8");
    let tids = history(dbs);
    for (k, t) in tids.iter().enumerate() {
        let want = (k + 1) as f64;
        let at = t.to_string();
        let out = dir.path().join(format!("a{k}.npy"));
        ok(&["export", dbs, "A", out.to_str().expect("utf8"), "--at", &at]);
        let vals = npy_values(&out);
        assert_eq!(vals.len(), 4000);
        assert!(vals.iter().all(|x| *x == want), "export --at {at}");
        let st: serde_json::Value =
            serde_json::from_str(&ok(&["stat", dbs, "A", "--json", "--at", &at])).expect("json");
        assert_eq!(
            st["sum"],
            serde_json::json!(4000.0 * want),
            "stat --at {at}"
        );
        let info = ok(&["file", "info", dbs, "oid:0x2", "--at", &at]);
        assert!(!info.is_empty());
    }
    // ls before the array existed: nothing; at an ISO time after the last
    // commit: the array.
    let ls0 = ok(&["ls", dbs, "--at", &Tid(tids[0].0 - 1).to_string()]);
    assert!(!ls0.contains('A'), "{ls0}");
    let ls_now = ok(&["ls", dbs, "--at", "2999-01-01T00:00:00"]);
    assert!(ls_now.contains("A\t"), "{ls_now}");
    let bad = wendelin(&["stat", dbs, "A", "--at", "yesterday-ish"]);
    assert_eq!(bad.status.code(), Some(1));

    // Pack as of the last transaction: older snapshots are refused.
    ok(&["pack", dbs, "--before", &tids[2].to_string()]);
    let o = wendelin(&["export", dbs, "A", "x.npy", "--at", &tids[0].to_string()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("packed"), "{err}");
    let st: serde_json::Value = serde_json::from_str(&ok(&[
        "stat",
        dbs,
        "A",
        "--json",
        "--at",
        &tids[2].to_string(),
    ]))
    .expect("json");
    assert_eq!(st["sum"], serde_json::json!(12000.0));
}

#[test]
fn stat_reads_big_endian_arrays_holding_data() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("be.fs");
    let db = wendelin::storage::DB::open(path.to_str().expect("utf8")).expect("db");
    let tm = wendelin::storage::TransactionManager::new();
    let c = db.open_connection(&tm).expect("conn");
    let n = 300_000usize; // spans two 2 MiB blocks as >f8
    let zfile = wendelin::bigfile::create_file(&c, 2 << 20).expect("file");
    let state = ArrayState {
        dtype: DType::parse(">f8").expect("dtype"),
        shape: vec![n],
        order: Order::C,
        zfile,
    };
    let oid = c.add(state).expect("add");
    let fh = wendelin::bigfile::ZBigFileH::open_new(
        &c,
        &tm,
        zfile,
        2 << 20,
        wendelin::bigfile::HandleOptions::default(),
    )
    .expect("fh");
    let bytes: Vec<u8> = (0..n)
        .flat_map(|i| (i as f64 * 0.5 - 7.0).to_be_bytes())
        .collect();
    fh.write(0, &bytes).expect("write");
    let r = c.ref_to(oid).expect("ref");
    c.root_mut().expect("root").insert("B", r);
    tm.commit().expect("commit");
    drop(fh);
    let st: serde_json::Value =
        serde_json::from_str(&ok(&["stat", path.to_str().expect("utf8"), "B", "--json"]))
            .expect("json");
    let sum: f64 = (0..n).map(|i| i as f64 * 0.5 - 7.0).sum();
    assert_eq!(st["count"], serde_json::json!(n));
    assert!((st["sum"].as_f64().expect("sum") - sum).abs() < 1e-6 * sum.abs());
    assert_eq!(st["min"], serde_json::json!(-7.0));
    assert_eq!(st["max"], serde_json::json!((n - 1) as f64 * 0.5 - 7.0));
}
