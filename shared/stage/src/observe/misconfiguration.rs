//! A wrong setting is no outage. A wrong password, a database that does not
//! exist, a role without the rights it needs, a NATS server without
//! JetStream: waiting cannot fix any of them, and a service that retried
//! them forever would hide the cause in a stream of warnings. Each is
//! reported here once, as one error line with its fix; a service whose
//! dependency stays misconfigured for [`GRACE`] exits non-zero (see
//! `run_service`), so that an operator's crash loop shows the cause.
//!
//! A dependency that is merely down is an outage and is never reported here.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// How long a misconfiguration may last before the service exits: long
/// enough for a password rotated in two steps, short enough for a crash
/// loop to show the cause at once.
pub const GRACE: Duration = Duration::from_secs(20);

struct Entry {
    dependency: &'static str,
    since: Instant,
    why: String,
}

/// What is misconfigured now, per dependency (cleared once it works).
static CURRENT: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Records that `dependency` refuses sluice because of a setting. The first
/// report since it last worked is logged as an error naming the fix; the
/// repeats that follow are not.
pub fn report(dependency: &'static str, why: &str, fix: &str) {
    let mut current = CURRENT.lock().expect("never poisoned");
    if current.iter().any(|e| e.dependency == dependency) {
        return;
    }
    tracing::error!(
        dependency,
        error = %why,
        fix,
        "configuration error: {dependency} refuses sluice; exiting in {} s unless it is fixed",
        GRACE.as_secs()
    );
    current.push(Entry {
        dependency,
        since: Instant::now(),
        why: format!("{why}; fix: {fix}"),
    });
}

/// `dependency` works again.
pub fn cleared(dependency: &'static str) {
    CURRENT
        .lock()
        .expect("never poisoned")
        .retain(|e| e.dependency != dependency);
}

/// Whether any misconfiguration stands reported: the warnings its
/// failures would each cause say nothing the error line did not.
pub fn reported() -> bool {
    !CURRENT.lock().expect("never poisoned").is_empty()
}

/// The first misconfiguration that has lasted at least `grace`, if any.
pub fn lasting(grace: Duration) -> Option<String> {
    CURRENT
        .lock()
        .expect("never poisoned")
        .iter()
        .find(|e| e.since.elapsed() >= grace)
        .map(|e| format!("configuration error: {}: {}", e.dependency, e.why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misconfiguration_lasts_until_cleared() {
        report(
            "test-dependency",
            "password authentication failed",
            "check DATABASE_URL",
        );
        report("test-dependency", "again", "ignored: already reported");
        let found = lasting(Duration::ZERO).expect("reported");
        assert!(found.contains("password authentication failed"), "{found}");
        assert!(found.contains("fix: check DATABASE_URL"), "{found}");
        assert!(lasting(Duration::from_secs(3600)).is_none());
        cleared("test-dependency");
        assert!(lasting(Duration::ZERO).is_none());
    }
}
