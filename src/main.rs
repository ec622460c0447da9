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
            r.and_then(|()| out.flush()).or_else(|e| {
                // A closed pipe (`| head`) is not an error of ours.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    Ok(())
                } else {
                    Err(format!("writing output: {e}"))
                }
            })
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
