// The TextMate grammar, run by VS Code's own engine (vscode-textmate with the Oniguruma
// regex library) over the shipped specs and the corpus's every-construct and evolution specs:
//  - every token class the grammar defines appears, so none is dead;
//  - no text but whitespace is left unclassified (only `source.ordo`);
//  - the scopes of each shipped spec equal the snapshot in test/snapshots/
//    (UPDATE_SNAPSHOTS=1 rewrites them after a deliberate change).
// Run with `npm test` here; `cargo xtask test` runs it too.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const vsctm = require("vscode-textmate");
const oniguruma = require("vscode-oniguruma");

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../../..");
const grammarPath = path.resolve(here, "../syntaxes/ordo.tmLanguage.json");

const wasm = fs.readFileSync(require.resolve("vscode-oniguruma/release/onig.wasm")).buffer;
await oniguruma.loadWASM(wasm);
const registry = new vsctm.Registry({
  onigLib: Promise.resolve({
    createOnigScanner: (sources) => new oniguruma.OnigScanner(sources),
    createOnigString: (s) => new oniguruma.OnigString(s),
  }),
  loadGrammar: async (scope) =>
    scope === "source.ordo" ? vsctm.parseRawGrammar(fs.readFileSync(grammarPath, "utf8"), grammarPath) : null,
});
const grammar = await registry.loadGrammar("source.ordo");

/** Every token of `text`: line, column, its text and its scopes below the root. */
function tokenize(text) {
  const out = [];
  let stack = vsctm.INITIAL;
  text.split("\n").forEach((line, n) => {
    const r = grammar.tokenizeLine(line, stack);
    for (const t of r.tokens) {
      const token = line.slice(t.startIndex, t.endIndex);
      out.push({ line: n + 1, col: t.startIndex + 1, token, scopes: t.scopes.slice(1) });
    }
    stack = r.ruleStack;
  });
  return out;
}

// Every class of token the grammar gives a name to (the scope up to its language suffix).
const classes = new Set();
(function collect(node) {
  if (Array.isArray(node)) node.forEach(collect);
  else if (node && typeof node === "object") {
    for (const [k, v] of Object.entries(node)) {
      if (k === "name" && typeof v === "string") classes.add(v);
      else collect(v);
    }
  }
})(JSON.parse(fs.readFileSync(grammarPath, "utf8")).repository);

const shipped = ["specs/order.ordo", "specs/transfer.ordo"];
const files = [...shipped, ...["every-construct", "evolution"].map((f) => `crates/ordo-spec/tests/corpus/good/${f}.ordo`)];
const seen = new Set();
const failures = [];
for (const file of files) {
  const tokens = tokenize(fs.readFileSync(path.join(root, file), "utf8"));
  for (const t of tokens) {
    t.scopes.forEach((s) => seen.add(s));
    if (t.scopes.length === 0 && t.token.trim() !== "") {
      failures.push(`${file}:${t.line}:${t.col}: \`${t.token}\` has no scope`);
    }
  }
  if (!shipped.includes(file)) continue;
  const shown = tokens
    .filter((t) => t.token.trim() !== "")
    .map((t) => `${t.line}:${t.col} ${JSON.stringify(t.token)} ${t.scopes.join(" ")}`)
    .join("\n") + "\n";
  const snapshot = path.join(here, "snapshots", path.basename(file) + ".scopes");
  if (process.env.UPDATE_SNAPSHOTS === "1") {
    fs.mkdirSync(path.dirname(snapshot), { recursive: true });
    fs.writeFileSync(snapshot, shown);
  } else if (!fs.existsSync(snapshot)) {
    failures.push(`${snapshot} is missing: run UPDATE_SNAPSHOTS=1 npm test`);
  } else {
    const want = fs.readFileSync(snapshot, "utf8").split("\n");
    const got = shown.split("\n");
    const at = got.findIndex((l, i) => l !== want[i]);
    if (at !== -1 || want.length !== got.length) {
      const i = at === -1 ? Math.min(want.length, got.length) : at;
      failures.push(`${file}: scopes differ from ${snapshot} at entry ${i + 1}:\n  want ${want[i]}\n  got  ${got[i]}`);
    }
  }
}
for (const c of classes) {
  if (!seen.has(c)) failures.push(`no token of class ${c} in ${files.join(", ")}`);
}
if (failures.length > 0) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log(`grammar: ${classes.size} token classes, all seen in ${files.length} specs; scopes match the snapshots`);
