/*!
A progress bar on stderr for fleet runs (done/total, failures so far, rate, ETA), driven by
the engine's [`Observer`] events. Shown only when stderr is a terminal and the run is not
quiet; lines printed while it runs are printed above it (never through it).
*/

use crate::{NameError, Observer, RunInfo, SchemaName, TenantReport};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// Wraps the printer: passes every event on, and moves the bar.
pub struct Progress<'a> {
    inner: &'a mut dyn Observer,
    bar: Option<ProgressBar>,
    failed: usize,
}

impl<'a> Progress<'a> {
    /// A bar when `enabled` and stderr is a terminal; otherwise a plain pass-through.
    pub fn new(inner: &'a mut dyn Observer, enabled: bool) -> Progress<'a> {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(style());
            bar
        });
        Progress { inner, bar, failed: 0 }
    }

    /// Runs `print` with the bar out of the way.
    fn above(&mut self, print: impl FnOnce(&mut dyn Observer)) {
        match self.bar.clone() {
            Some(bar) => bar.suspend(|| print(self.inner)),
            None => print(self.inner),
        }
    }
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{bar:30} {pos}/{len} tenants, {msg}, {rate} ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.1}/s", state.per_sec());
        })
}

impl Drop for Progress<'_> {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Progress<'_> {
    fn started(&mut self, run: &RunInfo) {
        self.above(|o| o.started(run));
    }

    fn discovered(&mut self, tenants: &[SchemaName], invalid: &[NameError]) {
        self.above(|o| o.discovered(tenants, invalid));
        if let Some(bar) = &self.bar {
            bar.set_length(tenants.len() as u64);
            bar.set_message("0 failed");
            bar.enable_steady_tick(Duration::from_millis(200));
        }
    }

    fn shared_done(&mut self, report: &TenantReport) {
        self.above(|o| o.shared_done(report));
    }

    fn tenant_done(&mut self, report: &TenantReport) {
        self.above(|o| o.tenant_done(report));
        self.failed += usize::from(report.failed());
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(format!("{} failed", self.failed));
        }
    }

    fn waiting(&mut self, tenant: &SchemaName, holder: &str) {
        self.above(|o| o.waiting(tenant, holder));
    }

    fn warning(&mut self, message: &str) {
        self.above(|o| o.warning(message));
    }
}
