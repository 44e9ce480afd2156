//! The `plinth` binary: `plinth serve` runs the platform; every other subcommand is a client of
//! its HTTP API. Exit codes: 0 success, 1 error, 2 usage error.

mod cli;
mod client;
mod config;
mod output;
mod serve;

use std::process::ExitCode;
use std::sync::Arc;

use plinth_core::serving::runtime::InferenceBackend;

use clap::Parser;

/// mimalloc instead of the system allocator: a prediction allocates a few dozen small buffers
/// (request, tensors, response, log record), and glibc's malloc/free were a fifth of a serving
/// core's time under load (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The inference backend this build serves with.
pub fn backend() -> Arc<dyn InferenceBackend> {
    #[cfg(feature = "infer")]
    return Arc::new(plinth_infer::NativeBackend);
    #[cfg(not(feature = "infer"))]
    return Arc::new(plinth_core::serving::runtime::NoBackend);
}

/// The SQL engine this build queries with.
fn query_engine() -> Arc<dyn plinth_core::data::query::QueryEngine> {
    #[cfg(feature = "query")]
    return Arc::new(plinth_query::DataFusion);
    #[cfg(not(feature = "query"))]
    return Arc::new(plinth_core::data::query::NoQuery);
}

/// The inference and table backends this build runs the core on, and the object store when
/// one is configured.
pub fn backends(
    objects: Option<&plinth_objects::S3Options>,
) -> anyhow::Result<plinth_core::Backends> {
    let objects = match objects {
        Some(opts) => Some(Arc::new(
            plinth_objects::S3Artifacts::open(opts)
                .map_err(|e| anyhow::anyhow!("object_store_url: {e}"))?,
        ) as Arc<dyn plinth_core::store::artifacts::ArtifactStore>),
        None => None,
    };
    Ok(plinth_core::Backends {
        inference: backend(),
        tables: Arc::new(plinth_data::Tables),
        query: query_engine(),
        objects,
        trainer: Arc::new(plinth_train::service::BuiltIn),
    })
}

/// A client command whose reader goes away (`plinth audit | head`) ends the way Unix tools do,
/// by SIGPIPE, instead of panicking in `println!`: Rust's runtime ignores SIGPIPE, so restore
/// its default. Never for `serve`, which writes to sockets that clients may close at any time.
#[cfg(unix)]
#[allow(unsafe_code)]
fn end_quietly_on_broken_pipe() {
    // SAFETY: called from `main` before any other thread exists (the runtime is built after
    // it), and SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn end_quietly_on_broken_pipe() {}

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) if cli::Cli::serve_help(&e).is_some() => {
            print!("{}", cli::Cli::serve_help(&e).unwrap_or_default());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if !args.is_serve() {
        end_quietly_on_broken_pipe();
    }
    // Busy polling (off until `plinth serve` sets its budget): see plinth_server::busy_poll.
    // On one CPU (a server pinned to a core) a work-stealing pool is overhead: one thread runs
    // every task.
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder
        .enable_all()
        .on_thread_park(|| {
            if let Some(poll) = plinth_server::busy_poll::global() {
                poll.before_park();
            }
        })
        .on_thread_unpark(|| {
            if let Some(poll) = plinth_server::busy_poll::global() {
                poll.after_unpark();
            }
        })
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(usage) = e.downcast_ref::<cli::UsageError>() {
                eprintln!("error: {usage}");
                return ExitCode::from(2);
            }
            match e.downcast_ref::<client::ServerError>() {
                Some(server) => {
                    let field = server
                        .body
                        .error
                        .field
                        .as_deref()
                        .map(|f| format!(" [field: {f}]"))
                        .unwrap_or_default();
                    eprintln!(
                        "error: {}: {}{field}",
                        server.body.error.code, server.body.error.message
                    );
                }
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::from(1)
        }
    }
}
