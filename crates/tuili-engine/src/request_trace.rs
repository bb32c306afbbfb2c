//! A record of the load the engine served, one JSON line per request as it ends, in
//! the trace format `tuili plan --simulate --trace` replays:
//! `{"arrival_s": .., "prompt_tokens": .., "output_tokens": ..}`, seconds from the
//! trace's start to the request's submission, its prompt and the tokens it generated.
//! Lines follow the order requests end in; a reader sorts them by arrival. A request
//! that generated nothing (refused, or cancelled while it waited) loaded no step and is
//! left out.

use std::path::Path;
use std::time::Instant;

use crate::line_log::LineLog;

/// An open request trace.
pub(crate) struct RequestTrace {
    out: LineLog,
    t0: Instant,
}

impl RequestTrace {
    /// Creates (or truncates) the trace at `path`.
    pub(crate) fn create(path: &Path) -> Result<RequestTrace, String> {
        Ok(RequestTrace {
            out: LineLog::create(path, "the request trace")?,
            t0: Instant::now(),
        })
    }

    /// Writes the line of a request submitted at `submitted` that ended with `output`
    /// tokens generated after a prompt of `prompt`.
    pub(crate) fn record(&mut self, submitted: Instant, prompt: usize, output: usize) {
        if prompt == 0 || output == 0 {
            return;
        }
        let at = submitted.saturating_duration_since(self.t0).as_secs_f64();
        self.out.write(&format!(
            "{{\"arrival_s\":{at:.6},\"prompt_tokens\":{prompt},\"output_tokens\":{output}}}"
        ));
    }
}
