//! Sampling and generation.
