//! The chip planner: what a model will do on a chip, predicted from the chip's datasheet
//! and corrected by measured runs.
//!
//! - [`chip`]: chip profiles (TOML, one source per number), built in or under
//!   `$TUILI_HOME/planner/chips`;
//! - [`cost`]: the model side, read from the loaded model's own spec: bytes per weight
//!   type, KV bytes per token, FLOPs per token;
//! - [`step`]: the time of one engine step, a roofline term per op plus overheads;
//! - [`fit`]: the efficiencies and overheads fitted to `tuili bench` runs (robust least
//!   squares);
//! - [`plan`]: the answers a buyer asks for (tokens/s, TTFT, fit, energy and cost);
//! - [`shape`]: the model side of a model known only by its published shape;
//! - [`published`]: published measurements of other chips, and their predictions;
//! - [`report`]: a plan as a self-contained HTML page with SVG charts;
//! - [`probe`]: the profile of the machine it runs on, from measured rates;
//! - [`load`]: the requests a simulated server meets: Poisson or gamma arrivals, or a
//!   recorded trace;
//! - [`sim`]: a serving simulator: the engine's real scheduler and KV block manager with
//!   predicted step times in place of the model.
//!
//! Everything here is arithmetic on integers and floats: no tensor is touched, so one
//! query answers in milliseconds.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bench;
pub mod chip;
pub mod cost;
pub mod fit;
pub mod load;
pub mod plan;
pub mod probe;
pub mod published;
pub mod report;
pub mod shape;
pub mod sim;
pub mod step;

/// Errors of the planner; each names the file or key and the value that was wrong.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A chip profile is malformed.
    #[error("chip profile {file}: {key}: {msg}")]
    Profile {
        /// The file (or built-in name) of the profile.
        file: String,
        /// The key that is wrong (dotted path).
        key: String,
        /// What is wrong with it.
        msg: String,
    },
    /// No profile has this name.
    #[error("no chip named '{0}' (known: {1})")]
    UnknownChip(String, String),
    /// A `tuili bench` JSON file cannot be used.
    #[error("bench results {file}: {msg}")]
    Bench {
        /// The file.
        file: String,
        /// What is wrong with it.
        msg: String,
    },
    /// An option is out of range.
    #[error("{0}")]
    BadOption(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The model cannot be loaded.
    #[error(transparent)]
    Model(#[from] tuili_models::ModelError),
    /// The fit has too few usable runs.
    #[error("calibration: {0}")]
    Fit(String),
}
