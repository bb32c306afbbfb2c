//! A minimal progress bar on stderr (only drawn when stderr is a terminal).

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// A progress bar for a known total.
pub struct Bar {
    label: &'static str,
    total: u64,
    start: Instant,
    tty: bool,
}

impl Bar {
    /// A bar labelled `label` for `total` units.
    pub fn new(label: &'static str, total: u64) -> Bar {
        Bar {
            label,
            total: total.max(1),
            start: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Redraws at `done` units.
    pub fn set(&self, done: u64) {
        if !self.tty {
            return;
        }
        let frac = done.min(self.total) as f64 / self.total as f64;
        let filled = (frac * 30.0) as usize;
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r{} [{}{}] {:5.1}% {:.1}s",
            self.label,
            "#".repeat(filled),
            " ".repeat(30 - filled),
            frac * 100.0,
            self.start.elapsed().as_secs_f64()
        );
        let _ = e.flush();
    }

    /// Redraws at `done` bytes, with the rate and the time left.
    pub fn set_bytes(&self, done: u64) {
        if !self.tty {
            return;
        }
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let left = self.total.saturating_sub(done) as f64 / rate.max(1.0);
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r{} {:.1}/{:.1} MB {:5.1}% {:.1} MB/s {:.0}s left   ",
            self.label,
            done as f64 / 1e6,
            self.total as f64 / 1e6,
            done.min(self.total) as f64 * 100.0 / self.total as f64,
            rate / 1e6,
            left
        );
        let _ = e.flush();
    }

    /// Ends the line.
    pub fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
