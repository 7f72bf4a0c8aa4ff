//! `legacygpu`: one binary for the whole cluster.
//!
//! `cluster start` runs a coordinator, `worker start` a peer, `task …` is a
//! client. Errors end the process with a non-zero exit code and one line on
//! stderr.

use std::process::ExitCode;

use clap::Parser;

mod args;
mod bench;
mod cluster;
mod demo;
mod demo_llm;
mod docs;
mod executors;
mod generate;
mod local;
mod monitor;
mod remote;
mod signals;
mod task;
mod worker;

use args::{Cli, Command};

/// mimalloc instead of the system allocator: the coordinator allocates per
/// message, and glibc's malloc was a fifth of its CPU time (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Cluster(cmd) => cluster::run(cmd).await,
            Command::Worker(cmd) => worker::run(cmd).await,
            Command::Task(cmd) => task::run(cmd).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Monitor(args) => monitor::run(args).await,
            Command::Completions { shell } => {
                use clap::CommandFactory;
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "legacygpu",
                    &mut std::io::stdout(),
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::Docs { what } => docs::run(&what),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<remote::Usage>().is_some() {
                ExitCode::from(remote::exit::USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Logs go to stderr; `RUST_LOG` or `--log-level` picks the level.
///
/// Whatever the level, the WebSocket and TLS libraries log at most `info`:
/// at `debug` and `trace` they print every frame they read or write, and
/// frames carry tokens and credentials. By default llama.cpp's own log
/// (target `llama-cpp-2`, a hundred lines per model loaded) shows only its
/// warnings and errors.
fn init_logging(level: Option<&str>) {
    use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, fmt};
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,llama-cpp-2=warn")),
    };
    // Without a hint, tracing (and `log`, through which the WebSocket library
    // logs) would build every disabled debug and trace record only to drop
    // it here: a few percent of the coordinator's CPU under load.
    let hint = tracing_subscriber::Layer::<tracing_subscriber::Registry>::max_level_hint(&filter);
    let wire = filter_fn(|m| !(logs_frames(m.target()) && *m.level() > tracing::Level::INFO))
        .with_max_level_hint(hint.unwrap_or(tracing::level_filters::LevelFilter::TRACE));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer =
        fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).with_filter(filter.and(wire));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Libraries whose debug and trace logs show message contents (tokio-postgres
/// logs every statement's parameters: join secrets and payloads).
fn logs_frames(target: &str) -> bool {
    const LIBS: [&str; 7] = [
        "tungstenite",
        "tokio_tungstenite",
        "rustls",
        "tokio_rustls",
        "hyper",
        "reqwest",
        "tokio_postgres",
    ];
    LIBS.iter()
        .any(|lib| target == *lib || target.strip_prefix(lib).is_some_and(|t| t.starts_with("::")))
}

#[cfg(test)]
mod tests {
    use tracing::level_filters::LevelFilter;

    #[test]
    fn libraries_that_log_contents_are_capped() {
        for target in ["tungstenite::protocol", "tokio_postgres::query", "hyper", "rustls::conn"] {
            assert!(super::logs_frames(target), "{target}");
        }
        for target in ["coordinator::conn", "hyperion", "tokio_postgresql"] {
            assert!(!super::logs_frames(target), "{target}");
        }
    }

    #[test]
    fn levels_below_the_chosen_one_are_disabled_before_any_record_is_built() {
        super::init_logging(Some("info"));
        assert_eq!(LevelFilter::current(), LevelFilter::INFO);
    }
}
