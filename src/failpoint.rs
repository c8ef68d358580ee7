//! Crash points for tests: with `KVSTORE_FAILPOINT=<name>` in its
//! environment, the server stops at the step of that name (the thread that
//! reaches it blocks forever) and says so on stderr, so a test can kill -9
//! it exactly there: while a snapshot is written, before or after it is
//! published, while the log it covers is removed, ...
//!
//! Not for production use; without the variable it costs one check of a
//! value read once.

use std::sync::OnceLock;

/// The environment variable that arms a crash point.
pub const FAILPOINT_VARIABLE: &str = "KVSTORE_FAILPOINT";

/// Blocks the calling thread forever if the armed crash point is `name`.
pub fn reached(name: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var(FAILPOINT_VARIABLE).ok());
    if armed.as_deref() != Some(name) {
        return;
    }
    crate::log_warn!("failpoint {name} reached; stopped here until killed");
    loop {
        std::thread::park();
    }
}
