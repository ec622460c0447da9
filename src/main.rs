//! The `wendelin` command-line tool.

mod fsrecover;
mod logcmd;
mod packcmd;
mod rmcmd;

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Out-of-core arrays over a ZODB-compatible transactional object database.
///
/// DB is a FileStorage path or file:///path URL. Exit status: 0 success,
/// 1 error (one line on stderr), 2 bad usage.
#[derive(Parser)]
#[command(name = "wendelin", version, about, long_about)]
struct Cli {
    /// RAM budget for memory-mapped data (e.g. 512MiB, 4GiB); default
    /// $WENDELIN_RAM_BUDGET, else half of physical RAM.
    #[arg(long, global = true)]
    ram_budget: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print every transaction and data record of a FileStorage (like ZODB's fsdump).
    ///
    /// Example: wendelin fsdump data.fs --json
    Fsdump {
        /// The FileStorage file (Data.fs).
        file: PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List root entries with their class; arrays with shape, dtype, order, size on disk.
    ///
    /// Example: wendelin ls data.fs
    Ls {
        /// The database.
        db: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The database as of a transaction: a tid (16 hex digits) or an
        /// ISO-8601 time (UTC unless it names a zone). Read-only.
        #[arg(long)]
        at: Option<String>,
    },
    /// Create a zero-filled array under a root key.
    ///
    /// Example: wendelin create data.fs A --shape 1000,1000 --dtype f8 --order F
    Create {
        /// The database (created if missing).
        db: String,
        /// Root key.
        name: String,
        /// Comma-separated dimensions.
        #[arg(long)]
        shape: String,
        /// numpy dtype: f8, f4, i8, i4, i2, i1, u8, u4, u2, u1 (optionally with < or |).
        #[arg(long)]
        dtype: String,
        /// C (row-major, default) or F (column-major).
        #[arg(long, default_value = "C")]
        order: String,
        /// Replace an existing entry.
        #[arg(long)]
        replace: bool,
    },
    /// Import an .npy file as an array (atomic, streamed; works beyond RAM).
    ///
    /// Example: wendelin import data.fs A a.npy
    Import {
        /// The database (created if missing).
        db: String,
        /// Root key.
        name: String,
        /// The .npy file.
        file: PathBuf,
        /// Replace an existing entry.
        #[arg(long)]
        replace: bool,
    },
    /// Export an array (or a range of its major axis) to an .npy file, streamed.
    ///
    /// Example: wendelin export data.fs A a.npy --slice 0:1000
    Export {
        /// The database.
        db: String,
        /// Root key.
        name: String,
        /// The .npy file to write.
        file: PathBuf,
        /// START:STOP along the major axis (axis 0 for C order, last for F).
        #[arg(long)]
        slice: Option<String>,
        /// The database as of a transaction: a tid (16 hex digits) or an
        /// ISO-8601 time (UTC unless it names a zone). Read-only.
        #[arg(long)]
        at: Option<String>,
    },
    /// count, sum, mean, min, max of an array, out of core and in parallel.
    ///
    /// Example: wendelin stat data.fs A --json
    Stat {
        /// The database.
        db: String,
        /// Root key.
        name: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// The database as of a transaction: a tid (16 hex digits) or an
        /// ISO-8601 time (UTC unless it names a zone). Read-only.
        #[arg(long)]
        at: Option<String>,
    },
    /// The demo: a signal array bigger than the RAM budget, generated in
    /// bounded transactions, then read back out of core (mean, sum, RSS).
    ///
    /// Example: wendelin demo /tmp/wdemo --size 4GiB --ram-budget 512MiB
    Demo {
        /// Directory for the database (data.fs inside).
        dir: String,
        /// Array size in bytes of f64 (e.g. 4GiB).
        #[arg(long, default_value = "4GiB")]
        size: String,
        /// Bytes per transaction while generating.
        #[arg(long, default_value = "256MiB")]
        txn: String,
        /// Run only `gen` or `read` (default: both).
        #[arg(long)]
        only: Option<String>,
    },
    /// ZBigFile tools (cat, info).
    ///
    /// Example: wendelin file info data.fs zbigf
    File {
        #[command(subcommand)]
        cmd: FileCmd,
    },
    /// Drop history nobody can reach (ZODB's pack); the previous file is kept as DB.old.
    Pack {
        /// The database (a FileStorage path or file:// URL).
        db: String,
        /// Pack time, a tid or an ISO-8601 time (UTC unless it names a zone): the
        /// database as of then and everything after stays. Default: now.
        #[arg(long)]
        before: Option<String>,
        /// Pack time N days ago.
        #[arg(long)]
        days: Option<f64>,
    },
    /// Transactions, newest first: tid, time, user, description, size, root entries changed.
    Log {
        /// The database (a FileStorage path or file:// URL).
        db: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// At most N transactions.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Remove a root entry in a new transaction (pack reclaims its data).
    Rm {
        /// The database.
        db: String,
        /// The root entry.
        name: String,
    },
    /// Copy every intact transaction of a damaged FileStorage into a new
    /// file, skipping (and naming) the damaged ones (like ZODB's fsrecover).
    ///
    /// Example: wendelin fsrecover damaged.fs recovered.fs
    Fsrecover {
        /// The damaged FileStorage (only read).
        file: PathBuf,
        /// The new file (must not exist).
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum FileCmd {
    /// Write a ZBigFile's bytes to stdout.
    ///
    /// Example: wendelin file cat data.fs zbigf > file.bin
    Cat {
        /// The database (path or file:// URL).
        db: String,
        /// A root key, or oid:0x... of the ZBigFile.
        path: String,
        /// The database as of a transaction: a tid (16 hex digits) or an
        /// ISO-8601 time (UTC unless it names a zone). Read-only.
        #[arg(long)]
        at: Option<String>,
    },
    /// Print blksize, size, block count and per-format counts.
    ///
    /// Example: wendelin file info data.fs oid:0x1 --json
    Info {
        /// The database (path or file:// URL).
        db: String,
        /// A root key, or oid:0x... of the ZBigFile.
        path: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The database as of a transaction: a tid (16 hex digits) or an
        /// ISO-8601 time (UTC unless it names a zone). Read-only.
        #[arg(long)]
        at: Option<String>,
    },
}

fn broken_pipe_ok(r: std::io::Result<()>) -> Result<(), String> {
    r.or_else(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(format!("writing output: {e}"))
        }
    })
}

fn run(cli: Cli) -> Result<(), String> {
    let demo_default = matches!(cli.cmd, Cmd::Demo { .. })
        && cli.ram_budget.is_none()
        && std::env::var_os("WENDELIN_RAM_BUDGET").is_none();
    let budget = wendelin::arraycmd::apply_ram_budget(if demo_default {
        Some("512MiB")
    } else {
        cli.ram_budget.as_deref()
    })?;
    match cli.cmd {
        Cmd::Demo {
            dir,
            size,
            txn,
            only,
        } => {
            let size = wendelin::arraycmd::parse_size(&size)?;
            let txn = wendelin::arraycmd::parse_size(&txn)?;
            match only.as_deref() {
                None => {
                    wendelin::demo::generate(&dir, size, txn)?;
                    wendelin::demo::read(&dir)
                }
                Some("gen") => wendelin::demo::generate(&dir, size, txn),
                Some("read") => wendelin::demo::read(&dir),
                Some(o) => Err(format!("--only must be gen or read, not {o:?}")),
            }
        }
        Cmd::Ls { db, json, at } => {
            let es = wendelin::arraycmd::ls(&db, at.as_deref())?;
            if json {
                wendelin::outln!(
                    "{}",
                    serde_json::to_string_pretty(&es).map_err(|e| e.to_string())?
                );
            } else {
                for en in es {
                    if let Some(err) = &en.error {
                        let class = if en.class.is_empty() { "?" } else { &en.class };
                        wendelin::outln!("{}\t{class}\terror: {err}", en.name);
                        continue;
                    }
                    match (&en.shape, &en.dtype) {
                        (Some(sh), Some(dt)) => wendelin::outln!(
                            "{}\t{}\tshape={:?} dtype={} order={} disk={}",
                            en.name,
                            en.class,
                            sh,
                            dt,
                            en.order.as_deref().unwrap_or("C"),
                            en.disk_bytes.unwrap_or(0)
                        ),
                        _ => wendelin::outln!("{}\t{}", en.name, en.class),
                    }
                }
            }
            Ok(())
        }
        Cmd::Create {
            db,
            name,
            shape,
            dtype,
            order,
            replace,
        } => wendelin::arraycmd::create(&db, &name, &shape, &dtype, &order, replace),
        Cmd::Import {
            db,
            name,
            file,
            replace,
        } => wendelin::arraycmd::import(&db, &name, &file, replace, budget).map(|_| ()),
        Cmd::Export {
            db,
            name,
            file,
            slice,
            at,
        } => wendelin::arraycmd::export(&db, &name, &file, slice.as_deref(), at.as_deref())
            .map(|_| ()),
        Cmd::Stat { db, name, json, at } => {
            let s = wendelin::arraycmd::stat(&db, &name, at.as_deref())?;
            if json {
                wendelin::outln!("{}", serde_json::to_string(&s).map_err(|e| e.to_string())?);
            } else {
                wendelin::outln!(
                    "count {}\nsum {}\nmean {}\nmin {}\nmax {}",
                    s.count,
                    s.sum,
                    s.mean,
                    s.min,
                    s.max
                );
            }
            Ok(())
        }
        Cmd::Pack { db, before, days } => packcmd::run(&db, before.as_deref(), days).map(|_| ()),
        Cmd::Log { db, json, limit } => {
            let entries = logcmd::log(&db, limit)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let r = if json {
                serde_json::to_writer_pretty(&mut out, &entries)
                    .map_err(std::io::Error::other)
                    .and_then(|()| writeln!(out))
            } else {
                logcmd::print_text(&entries, &mut out)
            };
            broken_pipe_ok(r.and_then(|()| out.flush()))
        }
        Cmd::Rm { db, name } => rmcmd::rm(&db, &name),
        Cmd::Fsrecover { file, out } => fsrecover::run(&file, &out),
        Cmd::Fsdump { file, json } => {
            let d = wendelin::fsdump::dump(&file).map_err(|e| e.to_string())?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let r = if json {
                serde_json::to_writer_pretty(&mut out, &d)
                    .map_err(std::io::Error::other)
                    .and_then(|()| writeln!(out))
            } else {
                wendelin::fsdump::print_text(&d, &mut out)
            };
            // A closed pipe (`| head`) is not an error of ours.
            broken_pipe_ok(r.and_then(|()| out.flush()))
        }
        Cmd::File {
            cmd: FileCmd::Cat { db, path, at },
        } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(4 << 20, stdout.lock());
            match wendelin::filecmd::cat(&db, &path, at.as_deref(), &mut out) {
                Ok(_) => broken_pipe_ok(out.flush()),
                Err(e) if e.contains("Broken pipe") => Ok(()),
                Err(e) => Err(e),
            }
        }
        Cmd::File {
            cmd: FileCmd::Info { db, path, json, at },
        } => {
            let i = wendelin::filecmd::info(&db, &path, at.as_deref())?;
            if json {
                wendelin::outln!(
                    "{}",
                    serde_json::to_string_pretty(&i).map_err(|e| e.to_string())?
                );
            } else {
                wendelin::outln!(
                    "oid {}\nblksize {}\nsize {}\nblocks {}\nZBlk0 {}\nZBlk1 {}\nholes {}",
                    i.oid,
                    i.blksize,
                    i.size,
                    i.blocks,
                    i.zblk0,
                    i.zblk1,
                    i.holes
                );
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WENDELIN_LOG")
                // A block that fails to load is reported by the command's own
                // error line; virtmem's log of it would repeat it.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,virtmem::fileh::load=off")
                }),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wendelin: {e}");
            ExitCode::FAILURE
        }
    }
}
