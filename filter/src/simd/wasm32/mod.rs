//! wasm32 SIMD128 kernels. The module is built with `+simd128` (see `.cargo/config.toml`), so the
//! choice is made at compile time: a wasm engine validates the whole module up front and cannot
//! fall back per function.

pub(crate) mod simd128;
