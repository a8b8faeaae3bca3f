//! Warnings about a condition that lasts (a dependency down, pulls
//! failing): the first is logged, then a summary at most every 30 s.

use std::time::{Duration, Instant};

/// A warning that repeats while its condition lasts: logged the first time,
/// then at most once per [`Repeats::EVERY`] with how often it happened in
/// between. A condition that lasts minutes otherwise floods the log.
#[derive(Debug, Default)]
pub struct Repeats {
    last_logged: Option<Instant>,
    since_logged: u64,
}

impl Repeats {
    /// The least time between two warnings about the same lasting condition.
    pub const EVERY: Duration = Duration::from_secs(30);

    /// `None`: stay quiet this time. `Some(n)`: log now; it happened `n`
    /// more times since it was last logged (0 the first time).
    pub fn due(&mut self) -> Option<u64> {
        match self.last_logged {
            Some(at) if at.elapsed() < Self::EVERY => {
                self.since_logged += 1;
                None
            }
            _ => {
                self.last_logged = Some(Instant::now());
                Some(std::mem::take(&mut self.since_logged))
            }
        }
    }

    /// The condition ended: the next occurrence is logged at once.
    pub fn end(&mut self) {
        *self = Repeats::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_logged_first_then_summarised() {
        let mut repeats = Repeats::default();
        assert_eq!(repeats.due(), Some(0));
        for _ in 0..99 {
            assert_eq!(repeats.due(), None);
        }
        repeats.last_logged = Some(Instant::now() - Repeats::EVERY);
        assert_eq!(repeats.due(), Some(99));
        repeats.end();
        assert_eq!(repeats.due(), Some(0));
    }
}
