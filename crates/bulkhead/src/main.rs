//! The `bulkhead` binary: one process that runs any subset of the controller, webhook and proxy roles
//! over one shared informer cache.

mod admin;
mod check;
mod check_replication;
mod cli;
mod convert;
mod kubeconfig;
mod logging;
mod metrics;
mod run;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// jemalloc instead of the system allocator: the cache is many small objects that come and go with
/// every watch event, and glibc's per-thread arenas hold on to freed memory; jemalloc returns it, so
/// the resident set follows what the cache holds (docs/benchmarks.md, "Every role in one process").
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => write_stdout(&format!("bulkhead {}\n", env!("CARGO_PKG_VERSION"))),
        Command::Crds => print_crds(),
        Command::Kubeconfig(args) => {
            let ca = match &args.certificate_authority {
                Some(path) => match std::fs::read(path) {
                    Ok(pem) => Some(pem),
                    Err(e) => {
                        eprintln!("bulkhead: cannot read {}: {e}", path.display());
                        return ExitCode::FAILURE;
                    }
                },
                None => None,
            };
            kubeconfig::render(&args, ca.as_deref()).and_then(|yaml| write_stdout(&yaml))
        }
        Command::Convert(args) => {
            let paths: Vec<_> = args.paths.into_iter().chain(args.files).collect();
            match convert::run(&paths) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::from(1),
                Err(error) => {
                    eprintln!("bulkhead: {error:#}");
                    return ExitCode::from(2);
                }
            }
        }
        Command::Check(args) => {
            let caller = check::Caller {
                user: args.user,
                groups: args.groups,
            };
            let paths: Vec<_> = args.paths.into_iter().chain(args.files).collect();
            match check::run(&paths, &caller, args.show_rendered) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::from(1),
                Err(error) => {
                    eprintln!("bulkhead: {error:#}");
                    return ExitCode::from(2);
                }
            }
        }
        Command::Run(args) => logging::init(&cli.logging).and_then(|()| {
            // kube's TLS stack is rustls; pick its crypto provider once, for every client in the process.
            let _ = rustls::crypto::ring::default_provider().install_default();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?
                .block_on(run::run(*args))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bulkhead: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_crds() -> anyhow::Result<()> {
    let mut out = String::new();
    for crd in bulkhead_api::crds::all() {
        out.push_str("---\n");
        out.push_str(&bulkhead_api::crds::to_yaml(&crd)?);
    }
    write_stdout(&out)
}

/// Writes to stdout; a reader that went away (`bulkhead crds | head`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::anyhow!("cannot write to stdout: {e}"))
        }
        _ => Ok(()),
    }
}
