//! The benchmark program: `cargo bench --bench bench -- [--json] [--quick] [--filter NAME] [--dir DIR]`.
//!
//! Every figure is printed beside a baseline measured in the same run (raw
//! mmap / pread of the same bytes, raw write+fsync, ...) and their ratio.
//! Groups live in `benches/bench/*.rs`; each adds rows to the [`Report`].

#[path = "bench/bigarray_bench.rs"]
mod bigarray_bench;
#[path = "bench/bigfile_bench.rs"]
mod bigfile_bench;
#[path = "bench/common.rs"]
#[allow(dead_code)] // shared helpers; not every group uses every one
mod common;
#[path = "bench/pack_bench.rs"]
mod pack_bench;
#[path = "bench/storage_bench.rs"]
mod storage_bench;
#[path = "bench/virtmem_bench.rs"]
mod virtmem_bench;
#[path = "bench/zeo_bench.rs"]
mod zeo_bench;

use common::{Config, Report};

/// A benchmark group: adds its rows to the report.
type Group = fn(&Config, &mut Report) -> Result<(), String>;

fn main() {
    let cfg = match Config::from_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let mut report = Report::default();
    let groups: [(&str, Group); 6] = [
        ("storage", storage_bench::run),
        ("virtmem", virtmem_bench::run),
        ("bigfile", bigfile_bench::run),
        ("bigarray", bigarray_bench::run),
        ("pack", pack_bench::run),
        ("zeo", zeo_bench::run),
    ];
    for (name, run) in groups {
        if !cfg.selects(name) {
            continue;
        }
        if let Err(e) = run(&cfg, &mut report) {
            eprintln!("bench group {name} failed: {e}");
            std::process::exit(1);
        }
    }
    report.print(cfg.json);
}
