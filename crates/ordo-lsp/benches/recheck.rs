//! What an editor waits for on a 10,000-line spec: an edit re-checked (parse, check, names
//! resolved), and the requests it sends after one (semantic tokens, hover, completion).

use criterion::{Criterion, criterion_group, criterion_main};
use lsp_types::Position;
use ordo_lsp::doc::Document;
use std::hint::black_box;

#[path = "../../ordo-spec/tests/it/generated.rs"]
mod generated;

fn recheck(c: &mut Criterion) {
    let big = generated::big_spec(10_000);
    // Typing a digit into a guard's number, half way down: the text stays valid.
    let at = big.len() / 2 + big[big.len() / 2..].find("quantity < 1000").expect("a guard") + 12;
    let edited = format!("{}9{}", &big[..at], &big[at..]);
    let mut group = c.benchmark_group("lsp");
    group.sample_size(20);
    let mut doc = Document::new(big.clone());
    group.bench_function("edit_recheck_10k_lines", |b| {
        let mut flip = false;
        b.iter(|| {
            flip = !flip;
            doc.update(black_box(if flip { edited.clone() } else { big.clone() }));
        })
    });
    let doc = Document::new(big.clone());
    assert!(doc.diagnostics.is_empty(), "the generated spec checks clean");
    group.bench_function("semantic_tokens_10k_lines", |b| {
        b.iter(|| ordo_lsp::features::semantic_tokens(black_box(&doc)))
    });
    // A field used across its machine, half way down; completion at the start of a body line.
    let field = big.len() / 2 + big[big.len() / 2..].find("-= quantity").expect("an effect") + 3;
    let field = doc.lines.position(&doc.text, field);
    let hovered = ordo_lsp::features::hover(&doc, field).expect("a field under the cursor");
    assert!(format!("{:?}", hovered.contents).contains("field `quantity`"));
    group.bench_function("hover_10k_lines", |b| b.iter(|| ordo_lsp::features::hover(black_box(&doc), field)));
    let line_start = Position { line: field.line, character: 8 };
    assert!(!ordo_lsp::complete::completion(&doc, line_start).is_empty());
    group.bench_function("completion_10k_lines", |b| {
        b.iter(|| ordo_lsp::complete::completion(black_box(&doc), line_start))
    });
    group.finish();
}

criterion_group!(benches, recheck);
criterion_main!(benches);
