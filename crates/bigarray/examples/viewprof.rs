//! Where the time of a sum over views goes (the bench's "sum over views"
//! rows, for `perf record`): `VIEWPROF_MIB` (2048) MiB of f64 appended once
//! into `$VIEWPROF_DIR/viewprof.fs` (kept for later runs), then `ROUNDS`
//! (3) passes, each on a fresh handle with a `BUDGET_MIB` (512; 0: the
//! default) budget and `THREADS` (2) threads each summing a contiguous part
//! through `with_view`.
use bigarray::{Order, ZBigArray};
use bigfile::{HandleOptions, ZBlkFormat};
use ndarray::{ArrayD, IxDyn};
use std::time::Instant;
use storage::{DB, TransactionManager, Value};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::var("VIEWPROF_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let path = format!("{dir}/viewprof.fs");
    let n = (env("VIEWPROF_MIB", 2048) << 20) as usize / 8;
    let budget = env("BUDGET_MIB", 512);
    let opts = |budget: u64| HandleOptions {
        format: ZBlkFormat::ZBlk0,
        virtmem: virtmem::Options {
            budget: (budget > 0).then_some(budget << 20),
            ..virtmem::Options::default()
        },
        spill_threshold: None,
    };
    let db = DB::open(&path)?;
    let tm = TransactionManager::new();
    let c = db.open_connection(&tm)?;
    let have = c.root()?.get("A").and_then(Value::ref_oid);
    let oid = match have {
        Some(o) => o,
        None => {
            let a = ZBigArray::<f64>::create(&c, &tm, &[0], Order::C, opts(0))?;
            let r = c.ref_to(a.oid())?;
            c.root_mut()?.insert("A", r);
            tm.commit()?;
            let step = (64usize << 20) / 8;
            let mut done = 0;
            while done < n {
                let k = step.min(n - done);
                let part = ArrayD::from_shape_fn(IxDyn(&[k]), |ix| ((done + ix[0]) % 1000) as f64);
                a.append(part.view())?;
                tm.commit()?;
                done += k;
            }
            a.oid()
        }
    };
    let k = env("THREADS", 2) as usize;
    for _ in 0..env("ROUNDS", 3) {
        let tm2 = TransactionManager::new();
        let c2 = db.open_connection(&tm2)?;
        let a = ZBigArray::<f64>::open(&c2, &tm2, oid, opts(budget))?;
        let len = a.len();
        let t = Instant::now();
        let total: f64 = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..k)
                .map(|i| {
                    let a = &a;
                    sc.spawn(move || {
                        let (lo, hi) = (len * i / k, len * (i + 1) / k);
                        a.with_view(|v| v.slice(ndarray::s![lo..hi]).sum())
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| "reader failed".to_string())?
                        .map_err(|e| e.to_string())
                })
                .sum::<Result<f64, String>>()
        })?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "{k} threads, budget {budget} MiB: {:.2} GB/s (sum {total})",
            (len * 8) as f64 / s / 1e9
        );
    }
    Ok(())
}
