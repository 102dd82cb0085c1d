//! `cargo xtask spec ...`: check, format, graph, expand, plan, docs and diff specs. Only
//! the spec crate's and the store's front doors; no server.

use crate::{Backend, GraphFormat, workspace_root};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Files named on the command line, with directories expanded to their `*.ordo` files
/// (sorted); `specs/` of the workspace when none are named.
pub fn spec_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let defaults = [workspace_root().join("specs")];
    let paths = if paths.is_empty() { &defaults[..] } else { paths };
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "ordo"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

pub fn read(file: &Path) -> Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

pub fn report(file: &Path, bytes: &[u8], diags: &[ordo_spec::Diagnostic]) {
    let text = ordo_spec::source_text(bytes);
    eprint!("{}", ordo_spec::render(&display_path(file), &text, diags));
}

/// A path as the user would type it: relative to the current directory when under it.
pub fn display_path(file: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    file.strip_prefix(&cwd).unwrap_or(file).display().to_string()
}

pub fn compile_or_report(file: &Path) -> Result<ordo_spec::ir::Spec> {
    let bytes = read(file)?;
    ordo_spec::compile_bytes(&bytes).or_else(|diags| {
        report(file, &bytes, &diags);
        bail!("{} has {} error(s)", file.display(), diags.len())
    })
}

pub fn check(paths: &[PathBuf]) -> Result<ExitCode> {
    let files = spec_files(paths)?;
    if files.is_empty() {
        bail!("no spec files found");
    }
    let mut errors = 0;
    for file in &files {
        let bytes = read(file)?;
        if let Err(diags) = ordo_spec::compile_bytes(&bytes) {
            report(file, &bytes, &diags);
            errors += diags.len();
        }
    }
    let noun = if files.len() == 1 { "spec" } else { "specs" };
    if errors == 0 {
        eprintln!("checked {} {noun}: no errors", files.len());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("checked {} {noun}: {errors} error(s)", files.len());
        Ok(ExitCode::FAILURE)
    }
}

pub fn fmt(paths: &[PathBuf], check: bool) -> Result<ExitCode> {
    let mut failed = false;
    for file in spec_files(paths)? {
        let bytes = read(&file)?;
        let formatted = match ordo_spec::format_bytes(&bytes) {
            Ok(f) => f,
            Err(diags) => {
                report(&file, &bytes, &diags);
                failed = true;
                continue;
            }
        };
        if formatted.as_bytes() == bytes.as_slice() {
            continue;
        }
        if check {
            eprintln!("{} is not formatted", display_path(&file));
            failed = true;
        } else {
            std::fs::write(&file, formatted).with_context(|| format!("writing {}", file.display()))?;
            eprintln!("formatted {}", display_path(&file));
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// A spec's name: its file name without `.ordo`.
pub fn spec_name(file: &Path) -> Result<String> {
    Ok(file.file_stem().and_then(|s| s.to_str()).context("spec file name")?.to_string())
}

/// Writes `contents` to `path` only when they differ, so timestamps move only on change.
pub fn write_if_changed(path: &Path, contents: &str) -> Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() != Some(contents) {
        std::fs::create_dir_all(path.parent().context("parent dir")?)?;
        std::fs::write(path, contents)?;
        eprintln!("wrote {}", display_path(path));
    }
    Ok(())
}

pub fn docs() -> Result<ExitCode> {
    let root = workspace_root();
    for file in spec_files(&[])? {
        let name = spec_name(&file)?;
        let source = std::fs::read_to_string(&file)?;
        let doc = ordo_spec::docs::spec_doc(&name, &source).map_err(|diags| {
            report(&file, source.as_bytes(), &diags);
            anyhow::anyhow!("{} does not check", file.display())
        })?;
        write_if_changed(&root.join("docs/specs").join(format!("{name}.md")), &doc)?;
        let spec = compile_or_report(&file)?;
        let sql = ordo_store::plan::render(&name, &spec, ordo_store::sea_orm::DbBackend::Postgres)?;
        write_if_changed(&root.join("docs/specs").join(format!("{name}.sql")), &sql)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn spec_sources(paths: &[PathBuf]) -> Result<Vec<ordo_store::SpecSource>> {
    let mut specs = Vec::new();
    for file in spec_files(paths)? {
        let source = String::from_utf8_lossy(&read(&file)?).into_owned();
        specs.push(ordo_store::SpecSource { name: spec_name(&file)?, ir: compile_or_report(&file)?, source });
    }
    Ok(specs)
}

pub fn diff(old: &Path, new: &Path) -> Result<ExitCode> {
    let d = ordo_spec::diff::diff(&compile_or_report(old)?, &compile_or_report(new)?);
    if d.is_empty() {
        println!("no changes");
        return Ok(ExitCode::SUCCESS);
    }
    for c in &d.changes {
        println!("{c}");
    }
    let blocking: Vec<String> = d.blocking().collect();
    for b in &blocking {
        eprintln!("{b}");
    }
    Ok(if blocking.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `spec graph`: a spec's state diagram.
pub fn graph(file: &Path, format: GraphFormat) -> Result<ExitCode> {
    let spec = compile_or_report(file)?;
    let format = match format {
        GraphFormat::Mermaid => ordo_spec::graph::Format::Mermaid,
        GraphFormat::Dot => ordo_spec::graph::Format::Dot,
    };
    print!("{}", ordo_spec::graph::render(&spec, format));
    Ok(ExitCode::SUCCESS)
}

/// `spec ir`: a spec's lowered IR as JSON.
pub fn ir(file: &Path) -> Result<ExitCode> {
    let spec = compile_or_report(file)?;
    println!("{}", serde_json::to_string_pretty(&spec)?);
    Ok(ExitCode::SUCCESS)
}

/// `spec expand`: the typed Rust layer the server generates.
pub fn expand(paths: &[PathBuf]) -> Result<ExitCode> {
    let mut specs = Vec::new();
    for file in spec_files(paths)? {
        specs.push((spec_name(&file)?, compile_or_report(&file)?));
    }
    print!("{}", ordo_codegen::generate(&specs));
    Ok(ExitCode::SUCCESS)
}

/// `spec plan`: the SQL of every command of a spec.
pub fn plan(file: &Path, backend: Backend) -> Result<ExitCode> {
    let spec = compile_or_report(file)?;
    let backend = match backend {
        Backend::Postgres => ordo_store::sea_orm::DbBackend::Postgres,
        Backend::Sqlite => ordo_store::sea_orm::DbBackend::Sqlite,
    };
    print!("{}", ordo_store::plan::render(&spec_name(file)?, &spec, backend)?);
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask spec test`: sequential, then concurrent conformance of one spec on a
/// throwaway database, with what they covered.
pub fn conformance(
    file: &Path,
    seconds: f64,
    database_url: Option<&str>,
    seed: Option<u64>,
) -> Result<ExitCode> {
    let spec = compile_or_report(file)?;
    let name = spec_name(file)?;
    let seed = seed.unwrap_or_else(ordo_conform::clock_seed);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let db = rt.block_on(async {
        match database_url {
            Some(url) => ordo_testkit::TestDb::postgres_on(url).await.map_err(anyhow::Error::msg),
            None => Ok(ordo_testkit::TestDb::sqlite()),
        }
    })?;
    let store = rt.block_on(async {
        let config = ordo_store::StoreConfig::new(db.url.clone());
        ordo_store::Store::open(config, &name, spec.clone(), true).await
    })?;
    let half = std::time::Duration::from_secs_f64(seconds.max(0.2) / 2.0);
    let backend = if database_url.is_some() { "PostgreSQL" } else { "SQLite" };
    eprintln!("{}: conformance on {backend}, seed {seed}", display_path(file));
    let mut failed = false;
    for (what, run) in [
        ("one at a time", ordo_conform::sequential as fn(&_, &_, &_) -> _),
        ("concurrent clients", ordo_conform::concurrent),
    ] {
        // One at a time may run on while something is not reached yet (races assert no coverage).
        let cover_for = if what == "one at a time" { half } else { std::time::Duration::ZERO };
        let options = ordo_conform::Options { cover_for, ..ordo_conform::Options::new(half, seed) };
        match run(&rt, &store, &options) {
            Ok(r) => eprintln!("  {what}: {}", r.describe(&spec).replace('\n', "\n    ")),
            Err(e) => {
                eprintln!("  {what}: {e}\n  repeat with --seed {seed}");
                failed = true;
                break;
            }
        }
    }
    // The store's pool closes before its throwaway database is dropped.
    drop(store);
    drop(db);
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
