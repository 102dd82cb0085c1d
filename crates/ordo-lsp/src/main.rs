//! `ordo-lsp`: the language server over stdio, started by the editor.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--version" || a == "-V") {
        println!("ordo-lsp {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let (connection, io) = lsp_server::Connection::stdio();
    let served = ordo_lsp::server::serve(&connection);
    drop(connection);
    let joined = io.join();
    match (served, joined) {
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Err(e), _) => {
            eprintln!("ordo-lsp: {e}");
            ExitCode::FAILURE
        }
        (_, Err(e)) => {
            eprintln!("ordo-lsp: {e}");
            ExitCode::FAILURE
        }
    }
}
