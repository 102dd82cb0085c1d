//! A large, valid spec of a chosen size, shared by the limits tests and the benchmark
//! (`benches/parse_check.rs` includes this file).

/// A valid spec of at least `lines` lines: a resource and a machine per 40 lines, each
/// machine with fields, checks, guards, effects, parameters and timers.
pub fn big_spec(lines: usize) -> String {
    let mut out = String::new();
    let mut i = 0;
    while out.lines().count() < lines {
        out.push_str(&format!(
            "// Unit {i}: stock and a lifecycle that uses it.
resource Stock{i} key sku: text {{
    available: int check >= 0
    reserved: int check >= 0

    op restock(quantity: int check >= 1 and <= 100000) {{
        available += quantity
    }}
}}

machine Flow{i} {{
    sku: text check != \"\"
    quantity: int check >= 1
    price: money check >= 0
    note: text?

    initial created
    state approved, packed, sent
    final done, voided

    create open {{
        require quantity * price >= 0
        Stock{i}[sku].available -= quantity
    }}
    on approve(by: text): created -> approved {{
        require by != \"\" and (quantity < 1000 or price > 100)
        set note = by
    }}
    on pack: approved -> packed {{
        lock pessimistic nowait
        Stock{i}[sku].reserved += quantity
    }}
    on send: packed -> sent
    on finish: sent -> done
    on void: created, approved -> voided {{
        Stock{i}[sku].available += quantity
    }}
    after 45m in created: void
}}

"
        ));
        i += 1;
    }
    out
}
