//! NEON twins of `scalar` (aarch64).
