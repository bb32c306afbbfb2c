//! What the engine's tests on the real default model share.
#![allow(dead_code)]

use std::sync::Arc;

use tuili_engine::{
    start_engine, EngineConfig, EngineHandle, Event, GenerateRequest, RequestStream, SamplingParams,
};
use tuili_gguf::GgufFile;
use tuili_models::Model;
use tuili_tokenizer::Tokenizer;

/// The default model and its tokenizer, or `None` after a visible skip line (a failure
/// with `TUILI_REQUIRE_MODELS=1`).
pub fn load() -> Option<(Arc<Model>, Arc<Tokenizer>)> {
    let path = tuili_testkit::model("smol.gguf")?;
    let file = Arc::new(GgufFile::open(&path).expect("open model"));
    let model = Model::load(&file).expect("load model");
    let tok = Tokenizer::from_gguf(&file).expect("load tokenizer");
    Some((Arc::new(model), Arc::new(tok)))
}

/// A greedy request for at most `max_tokens` tokens.
pub fn greedy(prompt: Vec<u32>, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        prompt,
        max_tokens,
        sampling: SamplingParams::greedy(),
        stop: Vec::new(),
        ignore_eos: false,
        logprobs: None,
        constraint: None,
        logit_bias: Vec::new(),
        render_special: false,
    }
}

/// An engine with a context of `n_ctx` tokens and `max_num_seqs` decode slots.
pub fn engine(
    model: &Arc<Model>,
    tok: &Arc<Tokenizer>,
    n_ctx: usize,
    max_num_seqs: usize,
) -> EngineHandle {
    let cfg = EngineConfig {
        n_ctx,
        max_num_seqs,
        ..Default::default()
    };
    start_engine(model.clone(), tok.clone(), cfg).expect("engine")
}

/// A request's tokens, or the text of its error event.
pub fn drain(mut s: RequestStream) -> Result<Vec<u32>, String> {
    let mut tokens = Vec::new();
    while let Some(ev) = s.next_blocking() {
        match ev {
            Event::Delta { tokens: t, .. } => tokens.extend(t),
            Event::Finished { .. } => return Ok(tokens),
            Event::Error(e) => return Err(e),
        }
    }
    Err("the stream ended without Finished or Error".to_string())
}
