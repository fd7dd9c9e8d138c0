//! aarch64 NEON kernels. NEON is mandatory in AArch64 (and on by default in every Rust aarch64
//! target), so the choice is made at compile time.

pub(crate) mod neon;
