//! Tokenizers (byte-level BPE, SentencePiece) and chat templates from GGUF metadata.
#![deny(missing_docs)]
