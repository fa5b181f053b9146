//! The `trellis` binary: see `trellis --help`.

use std::process::ExitCode;

use clap::Parser as _;

// Every request allocates a Store, WASI context and HTTP parts: mimalloc's
// thread-local free lists serve that pattern better than glibc's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = trellis::cli::Cli::parse();
    let telemetry = match trellis::telemetry::init(&cli.telemetry) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("trellis-worker")
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(cli.run());
    drop(runtime);
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the chain of contexts, outermost first.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
