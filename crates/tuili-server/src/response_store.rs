//! The Responses API's memory for `previous_response_id`: each stored response's whole
//! conversation (input and output, as chat messages), bounded in count and in age.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Most responses kept; the oldest goes first.
pub const MAX_STORED: usize = 1024;
/// A stored response is forgotten after this long.
pub const MAX_AGE: Duration = Duration::from_secs(3600);

/// Stored conversations by response id.
#[derive(Default)]
pub struct ResponseStore {
    entries: Mutex<VecDeque<(String, Instant, Vec<Value>)>>,
}

impl ResponseStore {
    /// Keeps `messages` under `id`, dropping expired entries and, past [`MAX_STORED`], the
    /// oldest.
    pub fn put(&self, id: String, messages: Vec<Value>) {
        self.put_at(id, messages, Instant::now());
    }

    fn put_at(&self, id: String, messages: Vec<Value>, now: Instant) {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.retain(|(_, t, _)| now.duration_since(*t) < MAX_AGE);
        while e.len() >= MAX_STORED {
            e.pop_front();
        }
        e.push_back((id, now, messages));
    }

    /// The conversation of response `id`, if it is stored and not expired.
    pub fn get(&self, id: &str) -> Option<Vec<Value>> {
        self.get_at(id, Instant::now())
    }

    fn get_at(&self, id: &str, now: Instant) -> Option<Vec<Value>> {
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.iter()
            .find(|(k, t, _)| k == id && now.duration_since(*t) < MAX_AGE)
            .map(|(_, _, m)| m.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_expire_and_the_oldest_go_first() {
        let s = ResponseStore::default();
        let t0 = Instant::now();
        s.put_at("a".into(), vec![json!(1)], t0);
        assert_eq!(s.get_at("a", t0), Some(vec![json!(1)]));
        assert_eq!(s.get_at("a", t0 + MAX_AGE), None);
        assert_eq!(s.get_at("b", t0), None);
        for i in 0..MAX_STORED {
            s.put_at(format!("r{i}"), vec![], t0);
        }
        assert_eq!(s.get_at("a", t0), None);
        assert!(s.get_at("r0", t0).is_some());
        assert_eq!(s.entries.lock().unwrap().len(), MAX_STORED);
    }
}
