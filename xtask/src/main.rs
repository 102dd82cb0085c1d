//! `cargo xtask`: the project's commands, their flags and the dispatch to each command's
//! module. See README.md.

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod chaos;
mod clients;
mod migrate;
mod pressure;
mod services;
mod spec;
mod suite;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Ordo's commands: spec tools and the test suite")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Work with lifecycle specs (`specs/*.ordo`).
    #[command(subcommand)]
    Spec(SpecCmd),
    /// Plan, apply, revert or show the migrations that take a database from the specs it
    /// runs to the specs on disk (docs/migrations.md).
    Migrate {
        #[arg(value_enum)]
        action: MigrateCmd,
        /// The database; default `DATABASE_URL`, else the embedded `sqlite://ordo.db`.
        #[arg(long, env = "DATABASE_URL", default_value = "sqlite://ordo.db?mode=rwc")]
        database_url: String,
        /// Apply destructive changes too (dropped fields, resources, machines).
        #[arg(long)]
        allow_destructive: bool,
        /// The specs the database serves (files or directories; all of `specs/` by default).
        specs: Vec<PathBuf>,
    },
    /// Run the criterion benchmarks (release build) and print their figures.
    Bench {
        /// Extra arguments for `cargo bench` (after `--`), e.g. a benchmark name filter.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Load a server over HTTP (open model, stages, peak search, lost responses), audit its
    /// database, and report; exit 1 when a threshold or the audit breaks. See docs/pressure.md.
    Pressure(Box<pressure::PressureArgs>),
    /// The pressure workload against 1–3 server processes while faults are injected on a
    /// schedule (Redis, PostgreSQL, the network, a failover, killed servers), then the audit
    /// and each fault's failures and recovery time. Starts and stops everything it uses.
    Chaos(Box<chaos::ChaosArgs>),
    /// Generate the Python, TypeScript and Rust clients from docs/openapi.json into
    /// clients/, type-check them, and run the scenario of clients/examples/ through each
    /// against a fresh server (npm, openapi-python-client and mypy needed; see .ci/run).
    Clients,
    /// schemathesis with every check and a fixed seed against a fresh server on the
    /// embedded default (the test command's edge step, which runs 25 examples), and how
    /// many operations answered a 2xx.
    Edge {
        /// Examples per operation and phase.
        #[arg(long, default_value = suite::SCHEMATHESIS_EXAMPLES)]
        examples: String,
    },
    /// Run the whole test suite: formatting, lints, then every test of the workspace.
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SpecCmd {
    /// Check specs and report every problem (all of `specs/` by default). Exits 1 on any.
    Check {
        /// Spec files or directories of them.
        paths: Vec<PathBuf>,
    },
    /// Print a spec's state diagram.
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
    /// Format specs canonically (all of `specs/` by default); comments are kept.
    Fmt {
        /// Report files that would change, and exit 1 if any, instead of writing them.
        #[arg(long)]
        check: bool,
        paths: Vec<PathBuf>,
    },
    /// Print the SQL of every command of a spec, as the store runs it.
    Plan {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Backend::Postgres)]
        backend: Backend,
    },
    /// Print the typed Rust layer the server generates from the specs (all of `specs/` by default).
    Expand { paths: Vec<PathBuf> },
    /// Print a spec's lowered IR as JSON, the form the store and codegen consume.
    Ir { file: PathBuf },
    /// Regenerate the checked-in docs of the shipped specs (`docs/specs/<name>.md`).
    Docs,
    /// Classify the changes from one version of a spec to another, without a database:
    /// exits 1 on a destructive or unmapped change, or one that cannot be planned.
    Diff { old: PathBuf, new: PathBuf },
    /// Conformance of the real executor to the spec: generated histories, one command at a
    /// time and from concurrent clients, compared with the reference interpreter; reports
    /// the states, transitions and operations reached. Exits 1 with the shrunk history on
    /// any difference. See docs/conformance.md.
    Test {
        file: PathBuf,
        /// Seconds of generation, half sequential and half concurrent.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// A PostgreSQL server to run on (a throwaway database is made on it and dropped);
        /// default: a throwaway SQLite file.
        #[arg(long)]
        database_url: Option<String>,
        /// The generator's seed (a failure names it); default: the clock.
        #[arg(long)]
        seed: Option<u64>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum MigrateCmd {
    /// Print the plan from the deployed specs to these, with live-row counts; change nothing.
    Plan,
    /// Apply the plan, all or nothing; refused when the data (or a destructive change) says so.
    Up,
    /// Revert the last applied version of each spec where that loses nothing.
    Down,
    /// The deployed versions of each spec, and whether the specs on disk differ.
    Status,
    /// Drop every table and make them anew from the specs (all data is lost).
    Fresh,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Mermaid,
    Dot,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Top::Spec(SpecCmd::Check { paths }) => spec::check(&paths),
        Top::Spec(SpecCmd::Graph { file, format }) => spec::graph(&file, format),
        Top::Spec(SpecCmd::Fmt { check, paths }) => spec::fmt(&paths, check),
        Top::Spec(SpecCmd::Ir { file }) => spec::ir(&file),
        Top::Spec(SpecCmd::Docs) => spec::docs(),
        Top::Spec(SpecCmd::Expand { paths }) => spec::expand(&paths),
        Top::Spec(SpecCmd::Plan { file, backend }) => spec::plan(&file, backend),
        Top::Spec(SpecCmd::Diff { old, new }) => spec::diff(&old, &new),
        Top::Spec(SpecCmd::Test { file, seconds, database_url, seed }) => {
            spec::conformance(&file, seconds, database_url.as_deref(), seed)
        }
        Top::Migrate { action, database_url, allow_destructive, specs } => {
            migrate::migrate(action, &database_url, allow_destructive, &specs)
        }
        Top::Pressure(args) => pressure::pressure(&workspace_root(), *args),
        Top::Chaos(args) => chaos::chaos(&workspace_root(), *args),
        Top::Clients => clients::clients(&workspace_root()).map(|()| ExitCode::SUCCESS),
        Top::Edge { examples } => {
            suite::schemathesis(&workspace_root(), &examples).map(|()| ExitCode::SUCCESS)
        }
        Top::Test { cargo_args } => suite::test(&cargo_args),
        Top::Bench { cargo_args } => suite::bench(&cargo_args),
    }
}

/// The cargo that runs us, so that toolchain overrides carry through.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}
