//! The `wendelin` command-line tool.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Out-of-core arrays over a ZODB-compatible transactional object database.
#[derive(Parser)]
#[command(name = "wendelin", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print every transaction and data record of a FileStorage (like ZODB's fsdump).
    Fsdump {
        /// The FileStorage file (Data.fs).
        file: PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// ZBigFile tools.
    File {
        #[command(subcommand)]
        cmd: FileCmd,
    },
}

#[derive(Subcommand)]
enum FileCmd {
    /// Write a ZBigFile's bytes to stdout.
    Cat {
        /// The database (path or file:// URL).
        db: String,
        /// A root key, or oid:0x... of the ZBigFile.
        path: String,
    },
    /// Print blksize, size, block count and per-format counts.
    Info {
        /// The database (path or file:// URL).
        db: String,
        /// A root key, or oid:0x... of the ZBigFile.
        path: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
    match cli.cmd {
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
            cmd: FileCmd::Cat { db, path },
        } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(4 << 20, stdout.lock());
            match wendelin::filecmd::cat(&db, &path, &mut out) {
                Ok(_) => broken_pipe_ok(out.flush()),
                Err(e) if e.contains("Broken pipe") => Ok(()),
                Err(e) => Err(e),
            }
        }
        Cmd::File {
            cmd: FileCmd::Info { db, path, json },
        } => {
            let i = wendelin::filecmd::info(&db, &path)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&i).map_err(|e| e.to_string())?
                );
            } else {
                println!(
                    "oid {}\nblksize {}\nsize {}\nblocks {}\nZBlk0 {}\nZBlk1 {}\nholes {}",
                    i.oid, i.blksize, i.size, i.blocks, i.zblk0, i.zblk1, i.holes
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
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
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
