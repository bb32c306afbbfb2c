//! A record of every engine step, one JSON line each, for comparing the engine's real
//! steps with what a model of their time predicts (`tuili plan --steps`).
//!
//! A line: `{"at_s": .., "idle_s": .., "forward_s": .., "step_s": .., "chunks": [[start, n,
//! sample], ..]}`: seconds from the log's start to the step's start, seconds since the
//! previous step ended (the engine loop's own work and any wait for requests), the
//! forward pass, and the whole step (schedule, forward, sampling, streaming the tokens);
//! then what the step ran, one chunk per sequence, in the scheduler's order (decodes
//! first).

use std::path::Path;
use std::time::Instant;

use crate::line_log::LineLog;
use crate::scheduler::ScheduledSeq;

/// An open step log.
pub struct StepLog {
    out: LineLog,
    t0: Instant,
    last_end: Option<Instant>,
}

/// When the parts of one step began and ended.
pub struct StepTimes {
    /// Before scheduling.
    pub begin: Instant,
    /// Around the forward pass.
    pub forward: (Instant, Instant),
    /// After the step's tokens were handed on.
    pub end: Instant,
}

impl StepLog {
    /// Creates (or truncates) the log at `path`.
    pub fn create(path: &Path) -> Result<StepLog, String> {
        Ok(StepLog {
            out: LineLog::create(path, "the step log")?,
            t0: Instant::now(),
            last_end: None,
        })
    }

    /// Writes the line of one step (flushed, so that a reader sees every finished step).
    pub fn record(&mut self, t: &StepTimes, plan: &[ScheduledSeq]) {
        let secs = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64();
        let idle = self.last_end.map_or(0.0, |e| secs(e, t.begin));
        self.last_end = Some(t.end);
        let chunks: Vec<String> = plan
            .iter()
            .map(|s| format!("[{},{},{}]", s.start_pos, s.tokens.len(), s.sample))
            .collect();
        self.out.write(&format!(
            "{{\"at_s\":{:.6},\"idle_s\":{:.6},\"forward_s\":{:.6},\"step_s\":{:.6},\"chunks\":[{}]}}",
            secs(self.t0, t.begin),
            idle,
            secs(t.forward.0, t.forward.1),
            secs(t.begin, t.end),
            chunks.join(",")
        ));
    }
}
