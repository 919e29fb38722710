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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    let _entered = rt.enter();
    // Dropped before the runtime: queued spans are flushed while it still runs.
    let _telemetry = match telemetry::init(cli.log_format, cli.otlp_endpoint()) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Validate(args) => commands::validate(&args),
        Command::Crds => commands::crds(),
        Command::Explain(args) => rt.block_on(commands::explain(args)),
        Command::Test(args) => rt.block_on(commands::test(&args)),
        Command::Serve(args) => match rt.block_on(runtime::serve(*args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("portcullis: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
