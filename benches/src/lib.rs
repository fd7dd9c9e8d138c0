//! Benchmarks of the meshtrace core live in `benches/`.
