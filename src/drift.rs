/*!
`drift`: tenants whose structure differs from the others at the same version (an index
dropped by hand, a column added in a hotfix). Every selected tenant's schema is snapshotted
(read-only, on the workers), tenants are grouped by version, and in each version the
structure most tenants share is the reference: every other tenant is reported with its
differences against a tenant that has the reference structure.
*/

use crate::config::RunConfig;
use crate::database::{Database, Workers};
use crate::discovery::{self, Selection};
use crate::error::Error;
use crate::harness;
use crate::snapshot;
use crate::tenant::SchemaName;
use diesel::Connection;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// A tenant whose structure differs from most tenants at its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Drifted {
    /// The tenant.
    pub tenant: String,
    /// Its newest applied version.
    pub version: Option<String>,
    /// A tenant at the same version with the structure most share.
    pub reference: String,
    /// Differences against the reference (`- ` missing here, `+ ` only here).
    pub differences: Vec<String>,
}

/// The result of `drift`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DriftReport {
    /// Tenants compared.
    pub tenants: usize,
    /// Per version: how many tenants, and how many distinct structures.
    pub versions: Vec<VersionGroup>,
    /// Tenants that differ from the reference structure of their version.
    pub drifted: Vec<Drifted>,
    /// Tenants that could not be read (missing schema, no privilege), with why.
    pub unreadable: Vec<String>,
}

/// Tenants at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct VersionGroup {
    /// The version (none: nothing applied).
    pub version: Option<String>,
    /// How many tenants are at it.
    pub tenants: usize,
    /// How many distinct structures they have (1: no drift).
    pub structures: usize,
}

impl DriftReport {
    /// Whether every tenant has the structure most tenants at its version have.
    pub fn clean(&self) -> bool {
        self.drifted.is_empty() && self.unreadable.is_empty()
    }
}

struct Read {
    tenant: SchemaName,
    version: Option<String>,
    lines: Vec<String>,
}

/// Compares the structure of every selected tenant with the others at its version.
pub(crate) fn drift(config: &RunConfig) -> Result<DriftReport, Error> {
    let mut db = Database::connect(&config.connector, config.concurrency, config.connect_timeout)?;
    let names = match discovery::read_offline(&config.tenants)? {
        Some(names) => names,
        None => discovery::read_from_database(&mut db.control, &config.tenants)?,
    };
    let selection = Selection {
        shard: config.shard,
        only: &config.only,
        exclude: &config.exclude,
        strict: config.strict,
        shared: &config.shared.schema,
    };
    let tenants = discovery::select(names, &selection)?.tenants;
    let (reads, unreadable) = read_all(&db.workers, &tenants);
    Ok(compare(reads, unreadable))
}

/// Snapshots every tenant on the workers.
fn read_all(workers: &Workers, tenants: &[SchemaName]) -> (Vec<Read>, Vec<String>) {
    let next = AtomicUsize::new(0);
    let reads = Mutex::new(Vec::new());
    let unreadable = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers.count.clamp(1, tenants.len().max(1)) {
            scope.spawn(|| {
                while let Some(tenant) = tenants.get(next.fetch_add(1, Ordering::Relaxed)) {
                    match read_one(workers, tenant) {
                        Ok(read) => reads.lock().unwrap_or_else(|e| e.into_inner()).push(read),
                        Err(why) => unreadable
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!("{tenant}: {why}")),
                    }
                }
            });
        }
    });
    let mut reads = reads.into_inner().unwrap_or_else(|e| e.into_inner());
    reads.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    let mut unreadable = unreadable.into_inner().unwrap_or_else(|e| e.into_inner());
    unreadable.sort();
    (reads, unreadable)
}

fn read_one(workers: &Workers, tenant: &SchemaName) -> Result<Read, String> {
    let mut conn = workers.checkout()?;
    let exists = snapshot::exists(&mut conn, tenant).map_err(|e| e.to_string())?;
    if !exists {
        return Err("schema does not exist".into());
    }
    let version = harness::applied_versions(&mut conn, tenant)
        .map_err(|e| e.to_string())?
        .into_iter()
        .next();
    // In a transaction of its own: the snapshot pins search_path for it.
    let lines = conn
        .transaction(|c| snapshot::schema(c, tenant))
        .map_err(|e| e.to_string())?;
    Ok(Read {
        tenant: tenant.clone(),
        version,
        lines,
    })
}

/// Groups by version, then by structure; the structure most tenants share is the reference.
fn compare(reads: Vec<Read>, unreadable: Vec<String>) -> DriftReport {
    let mut report = DriftReport {
        tenants: reads.len() + unreadable.len(),
        unreadable,
        ..DriftReport::default()
    };
    let mut by_version: BTreeMap<Option<String>, Vec<&Read>> = BTreeMap::new();
    for read in &reads {
        by_version.entry(read.version.clone()).or_default().push(read);
    }
    for (version, group) in by_version {
        let mut structures: Vec<(&Vec<String>, Vec<&Read>)> = Vec::new();
        for read in &group {
            match structures.iter_mut().find(|(lines, _)| **lines == read.lines) {
                Some((_, members)) => members.push(read),
                None => structures.push((&read.lines, vec![read])),
            }
        }
        // Most tenants first; on a tie, the structure of the alphabetically first tenant.
        structures.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.1[0].tenant.cmp(&b.1[0].tenant)));
        report.versions.push(VersionGroup {
            version: version.clone(),
            tenants: group.len(),
            structures: structures.len(),
        });
        let (reference_lines, reference_members) = &structures[0];
        for (_, members) in structures.iter().skip(1) {
            for read in members {
                report.drifted.push(Drifted {
                    tenant: read.tenant.to_string(),
                    version: version.clone(),
                    reference: reference_members[0].tenant.to_string(),
                    differences: snapshot::diff(reference_lines, &read.lines),
                });
            }
        }
    }
    report.drifted.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    report
}
