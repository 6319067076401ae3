/*!
Progress while a run is under way. The engine calls an [`Observer`] on the thread that started
the run, one report at a time, so an observer never sees two calls at once and output never
interleaves. The CLI's printer is one; an application may pass `()` or its own.
*/

use crate::report::{RunInfo, TenantReport};
use crate::tenant::{NameError, SchemaName};

/// Receives progress while a run is under way.
pub trait Observer {
    /// The run is connected and about to start: what it runs and where.
    fn started(&mut self, _run: &RunInfo) {}
    /// Tenants were discovered (after selection); `invalid` names were refused.
    fn discovered(&mut self, _tenants: &[SchemaName], _invalid: &[NameError]) {}
    /// The shared schema's migrations are done.
    fn shared_done(&mut self, report: &TenantReport) {
        self.tenant_done(report);
    }
    /// One tenant is done.
    fn tenant_done(&mut self, _report: &TenantReport) {}
    /// A tenant waits for its lock, held by another runner (`holder`: pid, application,
    /// client, since when).
    fn waiting(&mut self, _tenant: &SchemaName, _holder: &str) {}
    /// A problem found once for the whole run that does not stop it.
    fn warning(&mut self, _message: &str) {}
}

/// An observer that ignores everything.
impl Observer for () {}
