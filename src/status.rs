/*!
What `status` adds to the tenants' states as a deploy gate: the applied migrations whose
`up.sql` changed since they were applied (from the run journal's checksums), the newest `up`
run and the tenants it left failed, and how many tenants are at each version.
*/

use crate::journal;
use crate::report::{LastRun, TenantReport, VersionCount};
use crate::tenant::SchemaName;
use diesel::PgConnection;
use migrate_tenants_set::MigrationSet;
use std::collections::BTreeMap;

/// Marks applied migrations whose `up.sql` differs from the one the journal recorded, and
/// reads the newest `up` run. A journal that cannot be read is logged and skipped: the
/// tenants' histories are the truth, the journal only adds to them.
pub(crate) fn read_journal(
    conn: &mut PgConnection,
    schema: &SchemaName,
    set: &MigrationSet,
    reports: &mut [TenantReport],
) -> Option<LastRun> {
    match journal::exists(conn, schema) {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => {
            log::warn!("could not read the run journal: {e}");
            return None;
        }
    }
    if let Err(e) = mark_changed(conn, schema, set, reports) {
        log::warn!("could not compare checksums with the run journal: {e}");
    }
    match last_up_run(conn, schema) {
        Ok(last) => last,
        Err(e) => {
            log::warn!("could not read the last run from the run journal: {e}");
            None
        }
    }
}

fn mark_changed(
    conn: &mut PgConnection,
    schema: &SchemaName,
    set: &MigrationSet,
    reports: &mut [TenantReport],
) -> diesel::QueryResult<()> {
    let tenants: Vec<String> = reports.iter().map(|r| r.schema.to_string()).collect();
    let versions: Vec<String> = set.migrations().iter().map(|m| m.version.clone()).collect();
    let sums: Vec<String> = set.migrations().iter().map(|m| journal::checksum(&m.up)).collect();
    let mismatches = journal::checksum_mismatches(conn, schema, &tenants, &versions, &sums)?;
    let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (tenant, version) in mismatches {
        by_tenant.entry(tenant).or_default().push(version);
    }
    for report in reports.iter_mut() {
        if let Some(versions) = by_tenant.remove(report.schema.as_str()) {
            // Only what is still applied counts.
            report.changed_since_applied = versions.into_iter().filter(|v| !report.pending.contains(v)).collect();
        }
    }
    Ok(())
}

fn last_up_run(conn: &mut PgConnection, schema: &SchemaName) -> diesel::QueryResult<Option<LastRun>> {
    let Some(id) = journal::latest_run(conn, schema, "up", None)? else {
        return Ok(None);
    };
    let detail = journal::run_detail(conn, schema, id)?;
    Ok(detail.map(|d| LastRun {
        id,
        outcome: d.run.outcome,
        failed: d
            .tenants
            .into_iter()
            .filter(|t| t.outcome == "failed")
            .map(|t| t.tenant)
            .collect(),
    }))
}

/// How many tenants (that exist) are at each newest version, newest first, with names.
pub(crate) fn histogram(reports: &[TenantReport], set: &MigrationSet) -> Vec<VersionCount> {
    let mut counts: BTreeMap<Option<String>, usize> = BTreeMap::new();
    for r in reports.iter().filter(|r| r.exists && !r.failed()) {
        *counts.entry(r.version_after.clone()).or_default() += 1;
    }
    counts
        .into_iter()
        .rev()
        .map(|(version, tenants)| VersionCount {
            name: version.as_deref().and_then(|v| set.get(v)).map(|m| m.dir_name.clone()),
            version,
            tenants,
        })
        .collect()
}
