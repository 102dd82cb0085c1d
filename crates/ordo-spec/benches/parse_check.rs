//! Parse + check of a generated 10,000-line spec, and of the shipped order spec.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

#[path = "../tests/it/generated.rs"]
mod generated;

fn parse_check(c: &mut Criterion) {
    let big = generated::big_spec(10_000);
    let order = include_str!("../../../specs/order.ordo");
    let mut group = c.benchmark_group("compile");
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.sample_size(20);
    group.bench_function("parse_only_generated_10k_lines", |b| {
        b.iter(|| ordo_spec::parse(black_box(&big)).expect("valid"))
    });
    group.bench_function("generated_10k_lines", |b| {
        b.iter(|| ordo_spec::compile(black_box(&big)).expect("valid"))
    });
    group.throughput(Throughput::Bytes(order.len() as u64));
    group.bench_function("order_spec", |b| b.iter(|| ordo_spec::compile(black_box(order)).expect("valid")));
    group.finish();

    c.bench_function("fmt/generated_10k_lines", |b| {
        b.iter(|| ordo_spec::fmt::format(black_box(&big)).expect("formats"))
    });
}

criterion_group!(benches, parse_check);
criterion_main!(benches);
