//! `ordo-lsp` driven over stdio like an editor: every request it answers, on the shipped
//! specs and on broken ones, with the exact answers; the editor's diagnostics against the
//! command line's for the whole bad corpus.

mod client;

use client::{Client, position};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const ORDER: &str = include_str!("../../../../specs/order.ordo");
const ORDER_URI: &str = "file:///specs/order.ordo";

fn at(uri: &str, text: &str, needle: &str, nth: usize, shift: usize) -> Value {
    json!({ "textDocument": { "uri": uri }, "position": position(text, needle, nth, shift) })
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("json")
}

/// Applies a response's text edits (in LSP positions) to `text`, last first.
fn apply(text: &str, edits: &Value) -> String {
    let lines: Vec<usize> = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
    let offset = |p: &Value| {
        let start = lines[p["line"].as_u64().expect("line") as usize];
        let mut units = 0;
        for (i, c) in text[start..].char_indices() {
            if units >= p["character"].as_u64().expect("character") as usize {
                return start + i;
            }
            units += c.len_utf16();
        }
        text.len()
    };
    let mut edits: Vec<(usize, usize, &str)> = edits
        .as_array()
        .expect("edits")
        .iter()
        .map(|e| {
            (offset(&e["range"]["start"]), offset(&e["range"]["end"]), e["newText"].as_str().expect("text"))
        })
        .collect();
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = text.to_string();
    for (from, to, new) in edits {
        out.replace_range(from..to, new);
    }
    out
}

fn labels(items: &Value) -> Vec<String> {
    items.as_array().expect("items").iter().map(|i| i["label"].as_str().expect("label").to_string()).collect()
}

#[test]
fn initializes_checks_the_shipped_specs_clean_and_shuts_down() {
    let (mut c, init) = Client::start();
    insta::assert_snapshot!("capabilities", pretty(&init["capabilities"]));
    assert_eq!(init["serverInfo"]["name"], "ordo-lsp");
    for file in ["order.ordo", "transfer.ordo"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../specs").join(file);
        let text = std::fs::read_to_string(&path).expect("spec");
        let uri = format!("file:///specs/{file}");
        let published = c.open(&uri, &text);
        assert_eq!(published, json!({ "uri": uri, "version": 1, "diagnostics": [] }), "{file}");
    }
    c.shutdown();
}

/// One diagnostic as `cargo xtask spec check` prints it: code, `line:col`, message, help.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Reported {
    code: String,
    line: usize,
    col: usize,
    message: String,
    help: Option<String>,
}

/// Reads the command line's rendered report back into its parts.
fn from_report(report: &str) -> Vec<Reported> {
    let mut out: Vec<Reported> = Vec::new();
    for line in report.lines() {
        if let Some(rest) = line.strip_prefix("error[") {
            let (code, message) = rest.split_once("]: ").expect("error line");
            out.push(Reported { code: code.into(), line: 0, col: 0, message: message.into(), help: None });
        } else if let Some(place) = line
            .trim_start()
            .strip_prefix("┌─ spec.ordo:")
            .or(line.trim_start().strip_prefix("--> spec.ordo:"))
        {
            let last = out.last_mut().expect("a place follows an error");
            if last.line == 0 {
                let (l, c) = place.split_once(':').expect("line:col");
                (last.line, last.col) = (l.parse().expect("line"), c.parse().expect("col"));
            }
        } else if let Some(help) = line.trim_start().strip_prefix("= help: ") {
            out.last_mut().expect("help follows an error").help = Some(help.into());
        }
    }
    out.sort();
    out
}

/// The editor's diagnostics in the same parts; columns counted in characters, as the
/// command line counts them.
fn from_editor(text: &str, published: &Value) -> Vec<Reported> {
    let mut out: Vec<Reported> = published["diagnostics"]
        .as_array()
        .expect("diagnostics")
        .iter()
        .map(|d| {
            let line = d["range"]["start"]["line"].as_u64().expect("line") as usize;
            let units = d["range"]["start"]["character"].as_u64().expect("character") as usize;
            let line_text = text.split('\n').nth(line).unwrap_or_default();
            let mut seen = 0;
            let col = line_text.chars().take_while(|c| {
                seen += c.len_utf16();
                seen <= units
            });
            let message = d["message"].as_str().expect("message");
            let (message, help) = match message.split_once("\nhelp: ") {
                Some((m, h)) => (m.to_string(), Some(h.to_string())),
                None => (message.to_string(), None),
            };
            assert_eq!(d["source"], "ordo");
            Reported {
                code: d["code"].as_str().expect("code").into(),
                line: line + 1,
                col: col.count() + 1,
                message,
                help,
            }
        })
        .collect();
    out.sort();
    out
}

#[test]
fn editor_diagnostics_equal_spec_check_for_the_bad_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ordo-spec/tests/corpus/bad");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).expect("corpus").map(|e| e.expect("entry").path()).collect();
    files.sort();
    let (mut c, _) = Client::start();
    let mut compared = 0;
    for (n, file) in files.iter().enumerate() {
        let bytes = std::fs::read(file).expect("read");
        // An editor hands the server text; a file that is not UTF-8 never reaches it as such.
        let Ok(text) = String::from_utf8(bytes) else { continue };
        let diags = ordo_spec::compile(&text).expect_err("a bad spec has errors");
        let expected = from_report(&ordo_spec::render("spec.ordo", &text, &diags));
        assert_eq!(expected.len(), diags.len(), "{}: every error rendered", file.display());
        let uri = format!("file:///corpus/{n}.ordo");
        let published = c.open(&uri, &text);
        assert_eq!(from_editor(&text, &published), expected, "{}", file.display());
        compared += 1;
    }
    assert!(compared >= 70, "only {compared} corpus specs compared");
    c.shutdown();
}

#[test]
fn hover_definition_and_references_on_the_order_spec() {
    let (mut c, _) = Client::start();
    c.open(ORDER_URI, ORDER);
    // A state where an event leads to it.
    let hover = c.request("textDocument/hover", at(ORDER_URI, ORDER, "-> paid", 0, 3));
    insta::assert_snapshot!("hover_state", hover["contents"]["value"].as_str().expect("markdown"));
    // An event declared for two transitions and fired by a timer.
    let hover = c.request("textDocument/hover", at(ORDER_URI, ORDER, "in pending: cancel", 0, 12));
    insta::assert_snapshot!("hover_event", hover["contents"]["value"].as_str().expect("markdown"));
    // A field read in a body, and a parameter that shadows a field.
    let hover = c.request("textDocument/hover", at(ORDER_URI, ORDER, "-= quantity", 0, 3));
    insta::assert_snapshot!("hover_field", hover["contents"]["value"].as_str().expect("markdown"));
    let hover = c.request("textDocument/hover", at(ORDER_URI, ORDER, "set carrier = carrier", 0, 14));
    insta::assert_snapshot!("hover_param", hover["contents"]["value"].as_str().expect("markdown"));
    // Nothing under a keyword.
    assert_eq!(c.request("textDocument/hover", at(ORDER_URI, ORDER, "machine Order", 0, 2)), Value::Null);

    let def = c.request("textDocument/definition", at(ORDER_URI, ORDER, "Inventory[sku]", 0, 2));
    assert_eq!(
        def,
        json!([{ "uri": ORDER_URI, "range": { "start": position(ORDER, "Inventory key", 0, 0), "end": position(ORDER, "Inventory key", 0, 9) } }])
    );
    // `set carrier = carrier`: the first is the field, the second the parameter.
    let field = c.request("textDocument/definition", at(ORDER_URI, ORDER, "set carrier", 0, 5));
    assert_eq!(field[0]["range"]["start"], position(ORDER, "carrier: text?", 0, 0));
    let param = c.request("textDocument/definition", at(ORDER_URI, ORDER, "set carrier = carrier", 0, 15));
    assert_eq!(param[0]["range"]["start"], position(ORDER, "carrier: text,", 0, 0));

    let refs = c.request(
        "textDocument/references",
        json!({ "textDocument": { "uri": ORDER_URI }, "position": position(ORDER, "on cancel", 0, 4), "context": { "includeDeclaration": true } }),
    );
    let starts: Vec<&Value> = refs.as_array().expect("refs").iter().map(|r| &r["range"]["start"]).collect();
    assert_eq!(
        starts,
        vec![
            &position(ORDER, "on cancel", 0, 3),
            &position(ORDER, "on cancel", 1, 3),
            &position(ORDER, ": cancel", 0, 2)
        ]
    );
    let refs = c.request(
        "textDocument/references",
        json!({ "textDocument": { "uri": ORDER_URI }, "position": position(ORDER, "state paid", 0, 6), "context": { "includeDeclaration": false } }),
    );
    assert_eq!(
        refs.as_array().expect("refs").len(),
        5,
        "pay's target, cancel's and ship's source, both invariants: {refs}"
    );
    c.shutdown();
}

#[test]
fn completion_offers_what_may_stand_there() {
    let (mut c, _) = Client::start();
    // Keywords and types, in a new file that has never parsed (the cursor is at `|`).
    let cases: &[(&str, &[&str])] = &[
        ("machine Order {\n    amount: |", &["text", "int", "money", "bool", "timestamp"]),
        ("machine Order {\n    on pay(amount: |", &["text", "int", "money", "bool", "timestamp"]),
        ("|", &["machine", "resource", "invariant"]),
        ("machine Order {\n    |", &["initial", "state", "final", "create", "on", "after", "removed"]),
        ("resource Stock key sku: text {\n    |", &["op"]),
        ("resource Stock key sku: text {\n    op take {\n        lock |", &["optimistic", "pessimistic"]),
    ];
    for (n, (text, want)) in cases.iter().enumerate() {
        let uri = format!("file:///complete/{n}.ordo");
        let at_cursor = text.find('|').expect("cursor");
        let text = text.replace('|', "");
        c.open(&uri, &text);
        let items = c.request(
            "textDocument/completion",
            json!({ "textDocument": { "uri": uri }, "position": position(&text, "", 0, at_cursor) }),
        );
        assert_eq!(labels(&items), *want, "case {n}: {text}");
    }

    // Names come from the spec; inside a body they depend on where the cursor is.
    c.open(ORDER_URI, ORDER);
    let body_start = ORDER.replacen("        lock pessimistic\n", "        \n", 1);
    c.change(ORDER_URI, 2, &body_start);
    let items = c.request(
        "textDocument/completion",
        at(ORDER_URI, &body_start, "        \n        require has", 0, 8),
    );
    assert_eq!(labels(&items), ["require", "set", "lock", "isolation", "Inventory", "Wallet"]);
    let all_states = ["pending", "paid", "shipped", "delivered", "completed", "cancelled", "refunded"];
    let items = c.request("textDocument/completion", at(ORDER_URI, ORDER, "on pay: pending", 0, 8));
    assert_eq!(labels(&items), all_states);
    let items = c.request("textDocument/completion", at(ORDER_URI, ORDER, "-> paid {", 0, 3));
    assert_eq!(labels(&items), all_states);
    let items = c.request("textDocument/completion", at(ORDER_URI, ORDER, "set carrier", 0, 4));
    assert_eq!(labels(&items), ["sku", "quantity", "account", "amount", "carrier", "tracking"]);
    let items = c.request("textDocument/completion", at(ORDER_URI, ORDER, "carrier != \"\"", 0, 0));
    let got = labels(&items);
    assert_eq!(got[..2], ["carrier", "tracking"], "the event's parameters first: {got:?}");
    assert!(got.contains(&"quantity".to_string()) && got.contains(&"now".to_string()), "{got:?}");
    let items = c.request("textDocument/completion", at(ORDER_URI, ORDER, "].balance -= amount", 0, 2));
    assert_eq!(labels(&items), ["account", "balance"]);
    let items = c.request("textDocument/completion", at(ORDER_URI, ORDER, "in pending: cancel", 0, 3));
    assert_eq!(labels(&items), all_states);
    let items = c.request("textDocument/completion", at(ORDER_URI, ORDER, "in pending: cancel", 0, 12));
    assert_eq!(labels(&items), ["place", "pay", "cancel", "ship", "deliver", "refund", "complete"]);
    let items = c.request("textDocument/completion", at(ORDER_URI, ORDER, "restock.quantity)", 0, 0));
    assert_eq!(labels(&items), ["restock"]);
    let items = c.request("textDocument/completion", at(ORDER_URI, ORDER, "quantity)", 0, 0));
    assert_eq!(labels(&items), ["quantity"]);

    // While the text does not parse, names of the last text that did are still offered.
    let broken = ORDER.replacen("    on deliver: shipped -> delivered\n", "    on deliver: shipped -> \n", 1);
    let published = c.change(ORDER_URI, 3, &broken);
    assert_eq!(published["diagnostics"][0]["code"], "ordo::syntax");
    let items = c.request("textDocument/completion", at(ORDER_URI, &broken, "shipped -> \n", 0, 11));
    assert_eq!(labels(&items).len(), 7);
    c.shutdown();
}

#[test]
fn rename_formatting_symbols_and_tokens() {
    let (mut c, _) = Client::start();
    c.open(ORDER_URI, ORDER);
    let prepared = c.request("textDocument/prepareRename", at(ORDER_URI, ORDER, "state paid", 0, 7));
    assert_eq!(prepared["placeholder"], "paid");
    let renamed = c.request(
        "textDocument/rename",
        json!({ "textDocument": { "uri": ORDER_URI }, "position": position(ORDER, "state paid", 0, 7), "newName": "settled" }),
    );
    let edits = &renamed["changes"][ORDER_URI];
    assert_eq!(edits.as_array().expect("edits").len(), 6, "the declaration and five uses");
    let after = apply(ORDER, edits);
    assert!(after.contains("state settled, shipped") && after.contains("pending -> settled"));
    ordo_spec::compile(&after).expect("the renamed spec checks");

    // A field read in bodies, set, and summed by an invariant.
    let renamed = c.request(
        "textDocument/rename",
        json!({ "textDocument": { "uri": ORDER_URI }, "position": position(ORDER, "quantity: int check >= 1 and", 0, 0), "newName": "units" }),
    );
    let after = apply(ORDER, &renamed["changes"][ORDER_URI]);
    assert!(after.contains("units: int check >= 1 and") && after.contains("sum(Order.units in"));
    assert!(after.contains("available += quantity"), "the operation's own parameter is another name");
    ordo_spec::compile(&after).expect("the renamed spec checks");

    // Refusals: a reserved word, not a name, a name already taken in the scope.
    for (new_name, says) in [
        ("state", "reserved"),
        ("two words", "not a name"),
        ("shipped", "`Order` already has a state `shipped`"),
    ] {
        let refused = c.call(
            "textDocument/rename",
            json!({ "textDocument": { "uri": ORDER_URI }, "position": position(ORDER, "state paid", 0, 7), "newName": new_name }),
        );
        let message =
            refused["error"]["message"].as_str().unwrap_or_else(|| panic!("{new_name} refused: {refused}"));
        assert!(message.contains(says), "{message}");
    }

    let symbols = c.request("textDocument/documentSymbol", json!({ "textDocument": { "uri": ORDER_URI } }));
    let outline: Vec<String> = symbols
        .as_array()
        .expect("symbols")
        .iter()
        .map(|s| {
            let children: Vec<&str> = s["children"]
                .as_array()
                .map_or(vec![], |c| c.iter().map(|c| c["name"].as_str().expect("name")).collect());
            format!("{} {}: {}", s["kind"], s["name"].as_str().expect("name"), children.join(" "))
        })
        .collect();
    insta::assert_snapshot!("outline", outline.join("\n"));

    // The shipped spec is formatted already; a messy copy formats to it.
    let none = c.request(
        "textDocument/formatting",
        json!({ "textDocument": { "uri": ORDER_URI }, "options": { "tabSize": 4, "insertSpaces": true } }),
    );
    assert_eq!(none, json!([]));
    let messy = ORDER.replace("    on deliver: shipped -> delivered", "on   deliver :shipped->delivered");
    c.change(ORDER_URI, 2, &messy);
    let edits = c.request(
        "textDocument/formatting",
        json!({ "textDocument": { "uri": ORDER_URI }, "options": { "tabSize": 4, "insertSpaces": true } }),
    );
    assert_eq!(apply(&messy, &edits), ORDER);

    c.change(ORDER_URI, 3, ORDER);
    let tokens =
        c.request("textDocument/semanticTokens/full", json!({ "textDocument": { "uri": ORDER_URI } }));
    let data = tokens["data"].as_array().expect("data");
    assert_eq!(data.len() % 5, 0);
    // The first tokens: `Inventory` declared (a resource), `sku` declared (a field).
    assert_eq!(
        data[..10],
        [json!(3), json!(9), json!(9), json!(1), json!(1), json!(0), json!(14), json!(3), json!(4), json!(1)]
    );
    c.shutdown();
}

#[test]
fn quick_fixes_for_what_the_checker_proposes() {
    let (mut c, _) = Client::start();
    let typo = ORDER.replace("on pay: pending -> paid", "on pay: pending -> payed");
    let published = c.open(ORDER_URI, &typo);
    let d = &published["diagnostics"][0];
    assert_eq!(d["code"], "ordo::unknown-state");
    assert_eq!(d["message"], "there is no state `payed`\nhelp: did you mean `paid`?");
    let actions = c.request(
        "textDocument/codeAction",
        json!({ "textDocument": { "uri": ORDER_URI }, "range": d["range"], "context": { "diagnostics": [d] } }),
    );
    insta::assert_snapshot!("fix_did_you_mean", pretty(&actions));
    let fixed = apply(&typo, &actions[0]["edit"]["changes"][ORDER_URI]);
    assert_eq!(fixed, ORDER);

    // No close name: declare it.
    let missing = ORDER.replace(
        "    on deliver: shipped -> delivered\n",
        "    on deliver: shipped -> delivered\n    on lose: shipped -> lost\n",
    );
    let published = c.change(ORDER_URI, 2, &missing);
    let list = published["diagnostics"].as_array().expect("list");
    let d = list.iter().find(|d| d["code"] == "ordo::unknown-state").expect("an unknown state");
    assert_eq!(d["message"], "there is no state `lost`\nhelp: declare it: `state lost`");
    let actions = c.request(
        "textDocument/codeAction",
        json!({ "textDocument": { "uri": ORDER_URI }, "range": d["range"], "context": { "diagnostics": [d] } }),
    );
    assert_eq!(actions[0]["title"], "Declare state `lost` in `Order`");
    let fixed = apply(&missing, &actions[0]["edit"]["changes"][ORDER_URI]);
    assert!(fixed.contains("final completed, cancelled, refunded\n    state lost\n"), "{fixed}");
    // What is left is only what the new state itself is missing: nothing leaves it.
    let codes: Vec<String> = ordo_spec::compile(&fixed)
        .expect_err("a dead end")
        .iter()
        .map(|d| d.code.as_str().to_string())
        .collect();
    assert_eq!(codes, ["ordo::dead-end-state"]);
    c.shutdown();
}

#[test]
fn edits_recheck_and_bad_requests_get_errors() {
    let (mut c, _) = Client::start();
    c.open(ORDER_URI, ORDER);
    let broken =
        ORDER.replacen("    on deliver: shipped -> delivered\n", "    on deliver shipped -> delivered\n", 1);
    let published = c.change(ORDER_URI, 2, &broken);
    assert_eq!(published["version"], 2);
    assert_eq!(published["diagnostics"].as_array().expect("list").len(), 1);
    assert_eq!(published["diagnostics"][0]["code"], "ordo::syntax");
    // Navigation waits for text that parses rather than answer from stale positions.
    assert_eq!(c.request("textDocument/hover", at(ORDER_URI, &broken, "state paid", 0, 7)), Value::Null);
    assert_eq!(c.change(ORDER_URI, 3, ORDER)["diagnostics"], json!([]));

    // A document that is not open, an unknown method, parameters of the wrong shape.
    let unopened = c.call("textDocument/hover", at("file:///nowhere.ordo", ORDER, "state paid", 0, 7));
    assert_eq!(unopened["error"]["code"], -32602, "{unopened}");
    let unknown = c.call("textDocument/inlayHint", json!({ "textDocument": { "uri": ORDER_URI } }));
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    let malformed = c.call("textDocument/hover", json!({ "textDocument": 7 }));
    assert_eq!(malformed["error"]["code"], -32602, "{malformed}");
    // A position past the end of the text is the end of the text.
    let far = c.request(
        "textDocument/hover",
        json!({ "textDocument": { "uri": ORDER_URI }, "position": { "line": 9999, "character": 0 } }),
    );
    assert_eq!(far, Value::Null);
    // Closing a document clears its problems in the editor.
    c.change(ORDER_URI, 4, &broken);
    c.notify("textDocument/didClose", json!({ "textDocument": { "uri": ORDER_URI } }));
    assert_eq!(c.diagnostics(ORDER_URI)["diagnostics"], json!([]));
    c.shutdown();
}
