//! The `zfnet` binary: parses the command line, builds the stage registry, and hands off to
//! the orchestrator. Exit codes: 0 ok, 1 a stage failed, 2 bad usage or configuration.

mod cli;
mod commands;
mod kinds;
mod out_of_memory;
mod show_table;

#[global_allocator]
static ALLOCATOR: out_of_memory::ReportingAllocator = out_of_memory::ReportingAllocator;

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
    quiet_gpu_failure_panics();
    // An unusable ZFNET_CPU is the user's to fix, before any stage starts.
    match engine::cpu::path::from_env() {
        Ok(path) => tracing::info!("CPU kernels: {path} (the same bits on every path)"),
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    }
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

/// A GPU failure unwinds as a panic (the backend ops return no `Result`), and the stage's
/// failure line names it; the default hook would also print it as if zfnet had a bug.
fn quiet_gpu_failure_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(failure) = info.payload().downcast_ref::<stage_api::GpuFailure>() {
            tracing::debug!("GPU failure at {:?}: {}", info.location(), failure.message);
        } else {
            default_hook(info);
        }
    }));
}
