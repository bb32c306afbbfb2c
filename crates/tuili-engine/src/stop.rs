//! Stop strings over streamed text: text that might begin a stop string is held back
//! until it is known not to, so a stop string is never split across two deltas and
//! never reaches the client.

/// Outcome of feeding text.
#[derive(Debug, PartialEq, Eq)]
pub enum StopCheck {
    /// Text safe to emit now (maybe empty).
    Emit(String),
    /// A stop string was found: emit this text, then finish.
    Stopped(String),
}

/// Holds back the tail of the output that could still become a stop string.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> StopMatcher {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Feeds newly decoded text.
    pub fn push(&mut self, text: &str) -> StopCheck {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return StopCheck::Emit(std::mem::take(&mut self.held));
        }
        // The earliest stop string occurrence wins.
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..at].to_string();
            self.held.clear();
            return StopCheck::Stopped(out);
        }
        // Keep the longest suffix that is a proper prefix of some stop string.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let out = self.held[..keep].to_string();
        self.held.drain(..keep);
        StopCheck::Emit(out)
    }

    /// Text still held back when generation ends for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(stops: &[&str], pieces: &[&str]) -> (Vec<String>, Option<String>, String) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = Vec::new();
        for p in pieces {
            match m.push(p) {
                StopCheck::Emit(t) => out.push(t),
                StopCheck::Stopped(t) => return (out, Some(t), String::new()),
            }
        }
        let rest = m.flush();
        (out, None, rest)
    }

    #[test]
    fn stop_split_across_pieces_is_never_emitted() {
        let (out, stopped, _) = feed(
            &["\n\nUser:"],
            &["Hello", " there", "\n", "\nUs", "er:", " more"],
        );
        assert_eq!(out.concat(), "Hello there");
        assert_eq!(stopped.as_deref(), Some(""));
    }

    #[test]
    fn false_alarm_is_released() {
        let (out, stopped, rest) = feed(&["STOP"], &["a ST", "ART b"]);
        assert_eq!(stopped, None);
        assert_eq!(out.concat() + &rest, "a START b");
        assert_eq!(out, vec!["a ", "START b"]);
    }

    #[test]
    fn earliest_of_several_stops_wins_and_text_before_it_is_kept() {
        let (out, stopped, _) = feed(&["world", "lo"], &["hello world"]);
        assert!(out.iter().all(|s| s.is_empty()));
        assert_eq!(stopped.as_deref(), Some("hel"));
    }

    #[test]
    fn no_stops_passes_everything_through() {
        let (out, stopped, rest) = feed(&[], &["a", "b"]);
        assert_eq!(
            (out.concat(), stopped, rest),
            ("ab".to_string(), None, String::new())
        );
    }

    #[test]
    fn multibyte_text_is_held_on_char_boundaries() {
        let (out, stopped, rest) = feed(&["你好吗"], &["说你", "好", "!"]);
        assert_eq!(stopped, None);
        assert_eq!(out.concat() + &rest, "说你好!");
    }
}
