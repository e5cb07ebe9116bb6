use std::process::ExitCode;

use clap::Parser;

use roomservice::config::{Cli, Command};
use roomservice::{cli, run, telemetry};

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
