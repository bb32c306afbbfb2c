//! Kernels for transformer inference: quantized block formats and the small set
//! of ops the models call.
#![deny(missing_docs)]
