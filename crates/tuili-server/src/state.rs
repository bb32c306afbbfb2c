//! What every handler shares: configuration, the engine once the model is loaded, and
//! request counters for `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tuili_engine::EngineHandle;
use tuili_tokenizer::ChatTemplate;

use crate::ServerError;

/// Default largest request body: 4 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;

/// ChatML, for models whose file carries no chat template (llama.cpp's fallback too).
const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Name reported in responses and accepted in `model`.
    pub model_name: String,
    /// Other accepted names (the file stem, the path given on the command line).
    pub model_aliases: Vec<String>,
    /// Bearer token required on `/v1/*`, `/tokenize`, `/detokenize`; `None`: open.
    pub api_key: Option<String>,
    /// Largest request body in bytes; larger ones get 413.
    pub max_body_bytes: usize,
}

impl ServerConfig {
    /// A configuration serving `model_name` with no key and the default body limit.
    pub fn new(model_name: impl Into<String>) -> Self {
        ServerConfig {
            model_name: model_name.into(),
            model_aliases: Vec::new(),
            api_key: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// The loaded model: its engine and chat template.
pub struct Ready {
    /// Handle to the engine thread.
    pub engine: EngineHandle,
    /// The model's chat template (ChatML when the file has none).
    pub template: ChatTemplate,
}

/// Shared state of all handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: ServerConfig,
    ready: OnceLock<Ready>,
    /// Why the model could not be loaded, once the loader has failed.
    load_failed: OnceLock<String>,
    /// Responses sent, by status code.
    responses: Mutex<BTreeMap<u16, u64>>,
    shutting_down: AtomicBool,
    /// Responses API conversations kept for `previous_response_id`.
    stored: crate::response_store::ResponseStore,
    /// Unix seconds at start (`created` of `/v1/models`).
    started: u64,
}

impl AppState {
    /// The Responses API's stored conversations.
    pub(crate) fn stored(&self) -> &crate::response_store::ResponseStore {
        &self.inner.stored
    }

    /// State of a server whose model is still loading: `/health` answers 503 and the API
    /// routes 503 until [`AppState::set_ready`].
    pub fn new(config: ServerConfig) -> Self {
        AppState {
            inner: Arc::new(Inner {
                config,
                ready: OnceLock::new(),
                load_failed: OnceLock::new(),
                responses: Mutex::new(BTreeMap::new()),
                stored: Default::default(),
                shutting_down: AtomicBool::new(false),
                started: unix_now(),
            }),
        }
    }

    /// State of a server whose model is loaded.
    pub fn with_engine(
        config: ServerConfig,
        engine: EngineHandle,
        template: Option<ChatTemplate>,
    ) -> Result<Self, ServerError> {
        let state = AppState::new(config);
        state.set_ready(engine, template)?;
        Ok(state)
    }

    /// Marks the model loaded. `template: None` uses ChatML.
    pub fn set_ready(
        &self,
        engine: EngineHandle,
        template: Option<ChatTemplate>,
    ) -> Result<(), ServerError> {
        let template = match template {
            Some(t) => t,
            None => ChatTemplate::new(CHATML, "", "")
                .map_err(|e| ServerError::Load(format!("the ChatML fallback template: {e}")))?,
        };
        self.inner
            .ready
            .set(Ready { engine, template })
            .map_err(|_| ServerError::Load("the model was already set".to_string()))
    }

    /// The engine and template; 503 while loading, shutting down or once the engine has
    /// failed; 500 once the loader has failed.
    pub fn ready(&self) -> Result<&Ready, ServerError> {
        if let Some(why) = self.inner.load_failed.get() {
            return Err(ServerError::Load(why.clone()));
        }
        if self.is_shutting_down() {
            return Err(ServerError::ShuttingDown);
        }
        let ready = self.inner.ready.get().ok_or(ServerError::NotReady)?;
        ready.engine.health().map_err(ServerError::EngineFailed)?;
        Ok(ready)
    }

    /// Records that the model could not be loaded: `/health` and the API say why.
    pub fn set_load_failed(&self, why: String) {
        let _ = self.inner.load_failed.set(why);
    }

    /// The engine, if loaded (also during shutdown).
    pub fn engine(&self) -> Option<&EngineHandle> {
        self.inner.ready.get().map(|r| &r.engine)
    }

    /// HTTP settings.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Whether `name` is a name of the served model.
    pub fn serves(&self, name: &str) -> bool {
        let c = &self.inner.config;
        c.model_name == name || c.model_aliases.iter().any(|a| a == name)
    }

    /// Checks a request's `model` field (omitted is fine).
    pub fn check_model(&self, name: Option<&str>) -> Result<(), ServerError> {
        match name {
            Some(n) if !self.serves(n) => Err(ServerError::ModelNotFound {
                requested: n.to_string(),
                served: self.inner.config.model_name.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Stops accepting requests: the API answers 503 and the engine refuses new work.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        if let Some(e) = self.engine() {
            e.shutdown();
        }
    }

    /// Whether [`AppState::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Counts one response with `status`.
    pub fn count_response(&self, status: u16) {
        let mut m = self
            .inner
            .responses
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *m.entry(status).or_insert(0) += 1;
    }

    /// Responses sent so far, by status.
    pub fn responses(&self) -> BTreeMap<u16, u64> {
        self.inner
            .responses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Unix seconds at start.
    pub fn started(&self) -> u64 {
        self.inner.started
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
