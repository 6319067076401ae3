/*!
SIGINT and SIGTERM: the first one cancels the run (no new tenant starts, the statements in
flight are cancelled on the server so their transactions roll back, the summary is printed,
and the process exits 130 for SIGINT or 143 for SIGTERM); a second one exits at once.
*/

use super::output::errln;
use crate::CancelToken;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

/// The first signal received (0: none).
#[derive(Debug, Clone, Default)]
pub(super) struct Received(Arc<AtomicI32>);

impl Received {
    /// The exit code for an interrupted run: 128 + the signal.
    pub(super) fn exit_code(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(128 + signal),
        }
    }
}

/// Installs the handlers; the token is cancelled on the first signal.
pub(super) fn install(token: CancelToken) -> Received {
    let received = Received::default();
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(e) => {
            errln!("warning: cannot handle SIGINT/SIGTERM ({e}); an interruption will not cancel the run cleanly");
            return received;
        }
    };
    let first = received.clone();
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if first
                .0
                .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                // Cancel first: writing to a stderr nobody reads could block.
                token.cancel();
                errln!(
                    "interrupted: starting no new tenant, cancelling the migrations in flight (they roll back); \
                     send the signal again to exit at once"
                );
            } else {
                super::ephemeral::stop_running();
                std::process::exit(128 + signal);
            }
        }
    });
    received
}
