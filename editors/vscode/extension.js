// The Ordo extension: starts ordo-lsp over stdio for every .ordo file. Highlighting comes
// from syntaxes/ordo.tmLanguage.json; everything else (diagnostics, hover, definition,
// references, completion, rename, outline, formatting, quick fixes, semantic tokens) from
// the server, which runs the same checker as `cargo xtask spec check`.
"use strict";

const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const command = vscode.workspace.getConfiguration("ordo").get("server.path") || "ordo-lsp";
  const run = { command, args: [] };
  client = new LanguageClient(
    "ordo",
    "Ordo",
    { run, debug: run },
    { documentSelector: [{ scheme: "file", language: "ordo" }, { scheme: "untitled", language: "ordo" }] },
  );
  context.subscriptions.push({ dispose: () => client && client.stop() });
  return client.start().catch((e) => {
    vscode.window.showErrorMessage(
      `Ordo: could not start ${command} (${e.message}). Install it with ` +
        "`cargo install --path crates/ordo-lsp`, or set `ordo.server.path`.",
    );
  });
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
