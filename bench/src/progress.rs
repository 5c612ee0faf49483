//! What the running scenario is waiting for, so that a scenario cut short
//! by its deadline can say where it was stuck.
//!
//! Scenarios call [`waiting_for`] before each wait (a daemon to start, a
//! partner to connect or catch up, a daemon to stop). The step is kept
//! here for the in-process deadline and printed on stderr with
//! [`PREFIX`], which the parent process reads to name the step of a child
//! it had to kill.

use std::sync::{Mutex, PoisonError};

/// Prefix of the progress lines a scenario process prints on stderr.
pub const PREFIX: &str = "orgsync-bench progress: ";

static STEP: Mutex<String> = Mutex::new(String::new());

/// Records (and prints, for the parent process) what the scenario waits
/// for now.
pub fn waiting_for(step: impl Into<String>) {
    let step = step.into();
    eprintln!("{PREFIX}{step}");
    *STEP.lock().unwrap_or_else(PoisonError::into_inner) = step;
}

/// The last step recorded ("starting" before the first).
pub fn current() -> String {
    let step = STEP.lock().unwrap_or_else(PoisonError::into_inner);
    if step.is_empty() {
        "starting".into()
    } else {
        step.clone()
    }
}
