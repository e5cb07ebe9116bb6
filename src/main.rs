use std::process::ExitCode;

use clap::Parser;

use roomservice::config::{Cli, Command};
use roomservice::{cli, run, telemetry};

/// mimalloc rather than glibc's malloc: a call allocates and frees many small
/// buffers across tasks, and glibc's malloc, free and consolidation took
/// about an eighth of the server's CPU per GetRoom (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Token(args)) => cli::token::mint(&args).map(|token| println!("{token}")),
        Some(Command::Serve(args)) => serve(args),
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("roomservice: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: roomservice::config::ServeArgs) -> Result<(), String> {
    telemetry::init(args.log_format, &args.log)?;
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(run::serve(args))
}
