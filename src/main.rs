#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use portcullis::cli::{Cli, Command};
use portcullis::{commands, runtime, telemetry};

// jemalloc hands freed pages back to the system (background threads, decay): glibc's
// malloc would keep a large configuration's load and reload garbage resident for good.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Validate(args) => commands::validate(&args),
        Command::Crds => commands::crds(),
        Command::Explain(args) => block_on(commands::explain(args)),
        Command::Test(args) => block_on(commands::test(&args)),
        Command::Serve(args) => match block_on(runtime::serve(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("portcullis: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime")
        .block_on(f)
}
