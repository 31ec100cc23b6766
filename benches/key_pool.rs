//! Key pool benchmarks (not written yet).

fn main() {}
