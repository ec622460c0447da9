//! Shared pieces of the bench program: configuration, timing, the report table.

use std::path::PathBuf;
use std::time::Instant;

/// Command-line configuration of a bench run.
pub struct Config {
    /// Print JSON instead of a table.
    pub json: bool,
    /// Small sizes so a run finishes in well under two minutes.
    pub quick: bool,
    /// Only run groups / rows whose name contains this.
    pub filter: Option<String>,
    /// Directory for data files (default: a temp dir under /var/tmp).
    pub dir: PathBuf,
    /// Size of the main data set in MiB (groups scale from it).
    pub size_mib: u64,
    /// Highest thread count of the scan curves (1..=threads); default:
    /// the hardware threads.
    pub threads: usize,
    /// Also measure scans with a cold page cache (drops the kernel's caches
    /// before each such figure: root only). Pair with a `--size-mib` that
    /// makes the array larger than RAM to measure truly out of core.
    pub cold: bool,
}

impl Config {
    /// Parse `--json --quick --cold --filter X --dir D --size-mib N --threads N` (unknown args such as
    /// cargo's `--bench` are ignored).
    pub fn from_args(args: impl Iterator<Item = String>) -> Result<Config, String> {
        let mut cfg = Config {
            json: false,
            quick: false,
            filter: None,
            dir: std::env::temp_dir(),
            size_mib: 0,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cold: false,
        };
        let mut args = args.peekable();
        while let Some(a) = args.next() {
            match a.as_str() {
                "--json" => cfg.json = true,
                "--quick" => cfg.quick = true,
                "--cold" => cfg.cold = true,
                "--filter" => cfg.filter = Some(args.next().ok_or("--filter needs a value")?),
                "--dir" => cfg.dir = PathBuf::from(args.next().ok_or("--dir needs a value")?),
                "--threads" => {
                    cfg.threads = args
                        .next()
                        .ok_or("--threads needs a value")?
                        .parse::<usize>()
                        .map_err(|e| format!("--threads: {e}"))?
                        .max(1)
                }
                "--size-mib" => {
                    cfg.size_mib = args
                        .next()
                        .ok_or("--size-mib needs a value")?
                        .parse()
                        .map_err(|e| format!("--size-mib: {e}"))?
                }
                _ => {}
            }
        }
        if cfg.size_mib == 0 {
            cfg.size_mib = if cfg.quick { 256 } else { 1024 };
        }
        Ok(cfg)
    }

    /// Drop the kernel's page cache (root only), so the next read comes
    /// from the disk.
    pub fn drop_caches() -> Result<(), String> {
        // Sync first, so that dirty pages can be dropped too.
        let _ = std::process::Command::new("sync").status();
        std::fs::write("/proc/sys/vm/drop_caches", "3")
            .map_err(|e| format!("--cold: dropping the page cache: {e} (needs root)"))
    }

    /// True if group or row `name` passes the filter.
    pub fn selects(&self, name: &str) -> bool {
        self.filter
            .as_deref()
            .is_none_or(|f| name.contains(f) || f.contains(name))
    }
}

/// One line of the report: our figure next to its baseline.
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Our figure.
    pub ours: f64,
    /// Baseline figure, measured in the same run.
    pub baseline: f64,
    /// What the baseline is.
    pub baseline_name: String,
    /// Unit of both figures (e.g. "GB/s", "ms").
    pub unit: String,
    /// True if larger figures are better (throughput) rather than smaller (time).
    pub higher_is_better: bool,
}

impl Row {
    /// ours/baseline for throughput, baseline/ours for times: >1 means we are faster.
    pub fn ratio(&self) -> f64 {
        if self.higher_is_better {
            self.ours / self.baseline
        } else {
            self.baseline / self.ours
        }
    }
}

/// All rows of a run.
#[derive(Default)]
pub struct Report {
    /// The rows, in the order measured.
    pub rows: Vec<Row>,
}

impl Report {
    /// Add a throughput row (GB/s; higher is better).
    pub fn throughput(
        &mut self,
        name: &str,
        bytes: u64,
        ours_s: f64,
        baseline_name: &str,
        base_s: f64,
    ) {
        let gbps = |s: f64| bytes as f64 / s / 1e9;
        self.push(
            name,
            gbps(ours_s),
            baseline_name,
            gbps(base_s),
            "GB/s",
            true,
        );
    }

    /// Add a time row (ms; lower is better).
    pub fn time_ms(&mut self, name: &str, ours_s: f64, baseline_name: &str, base_s: f64) {
        self.push(name, ours_s * 1e3, baseline_name, base_s * 1e3, "ms", false);
    }

    /// Add a row.
    pub fn push(
        &mut self,
        name: &str,
        ours: f64,
        baseline_name: &str,
        baseline: f64,
        unit: &str,
        higher_is_better: bool,
    ) {
        let row = Row {
            name: name.to_owned(),
            ours,
            baseline,
            baseline_name: baseline_name.to_owned(),
            unit: unit.to_owned(),
            higher_is_better,
        };
        eprintln!(
            "  {:<44} {:>10.3} {:<5} vs {:<28} {:>10.3}  ratio {:.2}",
            row.name,
            row.ours,
            row.unit,
            row.baseline_name,
            row.baseline,
            row.ratio()
        );
        self.rows.push(row);
    }

    /// Print the table (markdown) or JSON to stdout.
    pub fn print(&self, json: bool) {
        if json {
            let rows: Vec<serde_json::Value> = self
                .rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "name": r.name, "ours": r.ours, "baseline": r.baseline,
                        "baseline_name": r.baseline_name, "unit": r.unit,
                        "higher_is_better": r.higher_is_better, "ratio": r.ratio(),
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(rows));
            return;
        }
        println!("| benchmark | ours | baseline | baseline is | ratio |");
        println!("|---|---:|---:|---|---:|");
        for r in &self.rows {
            println!(
                "| {} | {:.3} {} | {:.3} {} | {} | {:.2} |",
                r.name,
                r.ours,
                r.unit,
                r.baseline,
                r.unit,
                r.baseline_name,
                r.ratio()
            );
        }
    }
}

/// Run `f` and return (its result, elapsed seconds).
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_secs_f64())
}

/// Drop a file's pages from the OS page cache (for cold-cache figures).
#[allow(dead_code)]
pub fn drop_file_cache(path: &std::path::Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: posix_fadvise only reads its integer arguments; fd is valid while `f` lives.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(format!("posix_fadvise: {rc}"));
    }
    Ok(())
}
