//! `routing-tier`: the whole routing tier with one command; see the library docs.

use std::process::ExitCode;

use routing_tier::args::{self, Command, USAGE};

#[tokio::main]
async fn main() -> ExitCode {
    match args::parse(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("routing-tier: {e}\n{USAGE}");
            ExitCode::from(2)
        }
        Ok(Command::Certs(opts)) => match routing_tier::pki::run(&opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("routing-tier: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(Command::DemoApp { listen }) => match routing_tier::demo::run(listen).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("routing-tier: demo-app: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(Command::Up(opts)) => match routing_tier::up::run(opts).await {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("routing-tier: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
