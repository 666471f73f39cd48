//! `pagebuf`: the command-line face of the pagebuf library. Thin by design: every
//! figure it prints comes from the library; this crate only parses and formats.

mod demo;
mod format;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Page-aligned buffers, frame pools and direct I/O for streaming media and storage.
#[derive(Debug, Parser)]
#[command(name = "pagebuf", version)]
#[command(after_help = "Start with `pagebuf demo`: it needs no input and cleans up after itself.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what each allocator hands out: sizes, alignment, where the memory came from.
    #[command(after_help = "Example:\n  pagebuf demo")]
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo => demo::run(&mut std::io::stdout().lock()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pagebuf: {err}");
            ExitCode::FAILURE
        }
    }
}
