/*!
Canary tenants: `up` migrates a few tenants first, and the rest of the fleet starts only if
every one of them succeeded. A failing canary stops the run with the others untouched
(reported skipped, [`StopReason::CanaryFailed`](crate::StopReason::CanaryFailed)).
*/

use crate::control::StopReason;
use crate::error::Error;
use crate::fleet::{Fleet, Worker};
use crate::observer::Observer;
use crate::report::TenantReport;
use crate::tenant::SchemaName;
use crate::tenant_run::Tenant;
use std::collections::BTreeSet;

/// Which tenants go first.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Canary {
    /// The first N selected tenants, in name order (deterministic).
    First(usize),
    /// These tenants; each must be among the selected ones.
    Tenants(Vec<String>),
}

/// The canary tenants among `selected` (sorted by name), or an error naming the canaries
/// that are not selected. `None` when there is no canary.
pub(crate) fn select(canary: Option<&Canary>, selected: &[SchemaName]) -> Result<Option<BTreeSet<SchemaName>>, Error> {
    let Some(canary) = canary else {
        return Ok(None);
    };
    let chosen: BTreeSet<SchemaName> = match canary {
        Canary::First(0) => return Err(Error::Config("the number of canary tenants must be at least 1".into())),
        Canary::First(n) => selected.iter().take(*n).cloned().collect(),
        Canary::Tenants(names) => {
            let unknown: Vec<&str> = names
                .iter()
                .map(|n| n.trim())
                .filter(|n| !selected.iter().any(|s| s.as_str() == *n))
                .collect();
            if !unknown.is_empty() {
                return Err(Error::Config(format!(
                    "canary tenant(s) {} are not among the selected tenants: nothing was changed",
                    unknown.join(", ")
                )));
            }
            selected
                .iter()
                .filter(|s| names.iter().any(|n| n.trim() == s.as_str()))
                .cloned()
                .collect()
        }
    };
    Ok(Some(chosen))
}

/// Runs the canaries' work first, then the rest unless a canary failed or was not done
/// (`done`: the reports already settled without a worker, canaries' included). Once a canary
/// failed, the rest is reported skipped.
pub(crate) fn in_two_waves<F, S>(
    fleet: &mut Fleet<'_>,
    canaries: &BTreeSet<SchemaName>,
    work: Vec<Tenant>,
    done: &[TenantReport],
    observer: &mut dyn Observer,
    each: F,
    skipped: S,
) -> Vec<TenantReport>
where
    F: Fn(&Tenant, &Worker<'_>) -> TenantReport + Sync,
    S: Fn(&Tenant, &str) -> TenantReport + Sync,
{
    let (first, rest): (Vec<Tenant>, Vec<Tenant>) = work.into_iter().partition(|t| canaries.contains(&t.schema));
    let mut reports = fleet.parallel(&first, observer, &each, &skipped);
    let failed = done
        .iter()
        .chain(&reports)
        .any(|r| canaries.contains(&r.schema) && (r.failed() || r.skipped()));
    if failed {
        fleet.control.stop(StopReason::CanaryFailed);
    }
    reports.extend(fleet.parallel(&rest, observer, each, skipped));
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<SchemaName> {
        list.iter().map(|n| SchemaName::tenant(n).unwrap()).collect()
    }

    #[test]
    fn first_n_and_named_canaries() {
        let selected = names(&["a", "b", "c"]);
        let first = select(Some(&Canary::First(2)), &selected).unwrap().unwrap();
        assert_eq!(first.into_iter().collect::<Vec<_>>(), names(&["a", "b"]));
        let named = select(Some(&Canary::Tenants(vec!["c".into()])), &selected)
            .unwrap()
            .unwrap();
        assert_eq!(named.into_iter().collect::<Vec<_>>(), names(&["c"]));
        assert!(select(Some(&Canary::Tenants(vec!["zz".into()])), &selected).is_err());
        assert!(select(Some(&Canary::First(0)), &selected).is_err());
        assert!(select(None, &selected).unwrap().is_none());
    }
}
