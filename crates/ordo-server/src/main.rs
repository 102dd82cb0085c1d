//! `ordo-server`: serves the specs it was built from. Configuration: defaults, `ordo.toml`,
//! `ORDO_*` variables, then `--listen`.

use clap::Parser;
use ordo_server::config::Config;
use ordo_server::startup::Application;
use ordo_server::telemetry;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of the system allocator: a request allocates and frees many small
/// buffers across threads, where glibc's malloc showed as a tenth of the server's CPU in a
/// profile of the hot-SKU bench (which declares the same allocator, to measure the server
/// as it ships).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "ordo-server", about = "Serve the Ordo lifecycles of specs/*.ordo over HTTP")]
struct Cli {
    /// Address to listen on (overrides ORDO_LISTEN and ordo.toml).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Configuration file (default: ./ordo.toml when it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Apply safe, expand-only spec changes to the database at start-up (ORDO_MIGRATE=true);
    /// others are refused with the command that applies them.
    #[arg(long)]
    migrate: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref(), |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ordo-server: configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    config.migrate |= cli.migrate;
    // Built before the runtime: the exporter's blocking client has threads of its own.
    let tracer = match config.otlp_endpoint.as_deref().map(telemetry::otlp_tracer).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ordo-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter = ["ORDO_LOG", "RUST_LOG"]
        .iter()
        .find_map(|v| tracing_subscriber::EnvFilter::try_from_env(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(telemetry::LOG_FILTER_DEFAULT));
    // Human-readable on a terminal, JSON lines for a log collector otherwise.
    let human = std::io::stderr().is_terminal();
    if let Err(e) =
        tracing::subscriber::set_global_default(telemetry::subscriber(filter, human, tracer.as_ref()))
    {
        eprintln!("ordo-server: logging: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(endpoint) = &config.otlp_endpoint {
        tracing::info!(endpoint = %endpoint, "exporting traces by OTLP/HTTP");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ordo-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let app = match Application::build(&config).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("ordo-server: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("ordo-server: listening on http://{0} (API docs: http://{0}/docs)", app.addr);
        match app.run_until(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ordo-server: {e}");
                ExitCode::FAILURE
            }
        }
    });
    drop(runtime);
    // The last batch of spans leaves before the process does.
    if let Some(tracer) = tracer
        && let Err(e) = tracer.shutdown()
    {
        eprintln!("ordo-server: flushing traces: {e}");
    }
    code
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
