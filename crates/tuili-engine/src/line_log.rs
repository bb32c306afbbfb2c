//! A file of JSON lines the engine writes as it serves (the step log, the request
//! trace): each line flushed as written, so that a reader sees every finished record,
//! and a failed write stops the file, never the serving.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// An open file of lines.
pub(crate) struct LineLog {
    out: BufWriter<File>,
    /// What the file is, for the message when a write fails.
    what: &'static str,
    /// Set after a failed write.
    broken: bool,
}

impl LineLog {
    /// Creates (or truncates) `path`; `what` names it in errors ("the step log").
    pub(crate) fn create(path: &Path, what: &'static str) -> Result<LineLog, String> {
        let file = File::create(path)
            .map_err(|e| format!("cannot create {what} {}: {e}", path.display()))?;
        Ok(LineLog {
            out: BufWriter::new(file),
            what,
            broken: false,
        })
    }

    /// Writes `line` and a newline.
    pub(crate) fn write(&mut self, line: &str) {
        if self.broken {
            return;
        }
        let written = self
            .out
            .write_all(line.as_bytes())
            .and_then(|_| self.out.write_all(b"\n"))
            .and_then(|_| self.out.flush());
        if let Err(e) = written {
            crate::serve::tracing_stderr(&format!("{} stopped: {e}", self.what));
            self.broken = true;
        }
    }
}
