//! The `zfnet` binary: parses the command line, builds the stage registry, and hands off to
//! the orchestrator. Exit codes: 0 ok, 1 a stage failed, 2 bad usage or configuration.

mod cli;
mod commands;
mod kinds;
mod show_table;

use std::process::ExitCode;

use clap::Parser;

/// This program as stages and reports name it: version, and the commit it was built from.
pub const BUILD: &str = concat!(
    "zfnet ",
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("ZFNET_BUILD_COMMIT"),
    ")"
);

fn main() -> ExitCode {
    engine::allocator::keep_freed_memory_for_reuse();
    let cli = cli::Cli::parse();
    init_logging();
    match commands::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            let code = error
                .downcast_ref::<orchestrator::Error>()
                .map(orchestrator::Error::exit_code)
                .unwrap_or(1);
            eprintln!("error: {error:#}");
            ExitCode::from(code as u8)
        }
    }
}

/// One `tracing` subscriber for the whole process: warnings by default, `RUST_LOG` to see more.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
