/*!
Planning: which migrations to apply or revert on one tenant, from its applied versions.

Pure functions over the migration set, used twice per tenant: once from the catalog pass
(to skip up-to-date tenants and to refuse an irreversible `down` before touching anyone)
and again under the tenant's lock, where the fresh history is the source of truth.
*/

use crate::config::{Command, DownTarget};
use crate::harness::HarnessError;
use migrate_tenants_set::{DownSql, Migration, MigrationSet};

/// One step of a tenant's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'s> {
    /// Run `up.sql` and record the version.
    Apply(&'s Migration),
    /// Run `down.sql` and forget the version.
    Revert(&'s Migration),
}

impl<'s> Step<'s> {
    /// The migration the step runs.
    pub(crate) fn migration(self) -> &'s Migration {
        match self {
            Step::Apply(m) | Step::Revert(m) => m,
        }
    }
}

/// A command that does not fit the migration set (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// A step count of zero.
    #[error("the number of steps must be at least 1")]
    ZeroSteps,
    /// A target version the set does not know.
    #[error("version {version} is not one of the {known} known migrations")]
    UnknownVersion {
        /// The version as given.
        version: String,
        /// How many migrations the set holds.
        known: usize,
    },
}

/// Checks the command's versions against the set before any database work.
pub fn check_command(command: &Command, set: &MigrationSet) -> Result<(), CommandError> {
    let version = match command {
        Command::Up { to: Some(v) } | Command::Down(DownTarget::To(v)) | Command::Mark { version: v, .. } => v,
        Command::Redo { steps: 0 } | Command::Down(DownTarget::Steps(0)) => {
            return Err(CommandError::ZeroSteps);
        }
        _ => return Ok(()),
    };
    match set.resolve_version(version) {
        Some(_) => Ok(()),
        None => Err(CommandError::UnknownVersion {
            version: version.clone(),
            known: set.migrations().len(),
        }),
    }
}

/// The steps `command` takes on a tenant whose applied versions are `applied_desc`
/// (newest first).
pub fn plan<'s>(
    command: &Command,
    set: &'s MigrationSet,
    applied_desc: &[String],
) -> Result<Vec<Step<'s>>, HarnessError> {
    match command {
        // A rollback's steps come from the journal, a mark's from its version: see `tenant_plan`.
        Command::Status | Command::Rollback { .. } | Command::Mark { .. } => Ok(Vec::new()),
        Command::Up { to } => {
            let limit = to
                .as_deref()
                .and_then(|v| set.resolve_version(v))
                .map(|m| m.version.as_str());
            Ok(set
                .migrations()
                .iter()
                .filter(|m| limit.is_none_or(|l| m.version.as_str() <= l))
                .filter(|m| !applied_desc.contains(&m.version))
                .map(Step::Apply)
                .collect())
        }
        Command::Down(target) => {
            let chosen: Vec<&String> = match target {
                DownTarget::Steps(n) => applied_desc.iter().take(*n).collect(),
                DownTarget::All => applied_desc.iter().collect(),
                DownTarget::To(v) => {
                    let floor = set.resolve_version(v).map_or(v.as_str(), |m| m.version.as_str());
                    applied_desc.iter().filter(|a| a.as_str() > floor).collect()
                }
            };
            reversible(set, &chosen).map(|ms| ms.into_iter().map(Step::Revert).collect())
        }
        Command::Redo { steps } => {
            let chosen: Vec<&String> = applied_desc.iter().take(*steps).collect();
            let ms = reversible(set, &chosen)?;
            Ok(ms
                .iter()
                .map(|m| Step::Revert(m))
                .chain(ms.iter().rev().map(|m| Step::Apply(m)))
                .collect())
        }
    }
}

/// The steps `command` takes on one tenant: [`plan`], or for a rollback the journal's
/// migrations of that tenant (`undo`, newest first) that are still applied.
pub(crate) fn tenant_plan<'s>(
    command: &Command,
    set: &'s MigrationSet,
    undo: &'s [Migration],
    applied_desc: &[String],
) -> Result<Vec<Step<'s>>, HarnessError> {
    if let Command::Mark { version, applied, .. } = command {
        let m = set.resolve_version(version);
        let is_applied = m.is_some_and(|m| applied_desc.contains(&m.version));
        return Ok(match (m, *applied, is_applied) {
            (Some(m), true, false) => vec![Step::Apply(m)],
            (Some(m), false, true) => vec![Step::Revert(m)],
            _ => Vec::new(),
        });
    }
    if !matches!(command, Command::Rollback { .. }) {
        return plan(command, set, applied_desc);
    }
    undo.iter()
        .filter(|m| applied_desc.contains(&m.version))
        .map(|m| match m.down {
            DownSql::Missing => Err(HarnessError::Irreversible(m.dir_name.clone())),
            _ => Ok(Step::Revert(m)),
        })
        .collect()
}

/// Flyway's ordering rule for `up`: a pending migration older than the tenant's newest
/// applied version (known or not) is refused, naming both. Other commands pass.
pub(crate) fn check_order(
    command: &Command,
    set: &MigrationSet,
    applied_desc: &[String],
    steps: &[Step<'_>],
) -> Result<(), HarnessError> {
    let (Command::Up { .. }, Some(newest)) = (command, applied_desc.first()) else {
        return Ok(());
    };
    let late = steps.iter().find_map(|s| match s {
        Step::Apply(m) if m.version < *newest => Some(m),
        _ => None,
    });
    match late {
        Some(m) => Err(HarnessError::OutOfOrder {
            pending: m.dir_name.clone(),
            newest: set.get(newest).map_or_else(|| newest.clone(), |n| n.dir_name.clone()),
        }),
        None => Ok(()),
    }
}

/// The `--to` version `command` names when the tenant is already past it (its newest
/// applied version is newer), as the migration's directory name.
pub(crate) fn past_target(command: &Command, set: &MigrationSet, applied_desc: &[String]) -> Option<String> {
    let Command::Up { to: Some(to) } = command else {
        return None;
    };
    let target = set.resolve_version(to)?;
    let newest = applied_desc.first()?;
    (*newest > target.version).then(|| target.dir_name.clone())
}

fn reversible<'s>(set: &'s MigrationSet, versions: &[&String]) -> Result<Vec<&'s Migration>, HarnessError> {
    versions
        .iter()
        .map(|v| {
            let m = set.get(v).ok_or_else(|| HarnessError::UnknownVersion(v.to_string()))?;
            match m.down {
                DownSql::Missing => Err(HarnessError::Irreversible(m.dir_name.clone())),
                _ => Ok(m),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use migrate_tenants_set::{Origin, RawMigration};

    fn set() -> MigrationSet {
        let raw = |v: &str, down: Option<&str>| RawMigration {
            dir_name: format!("{v}_m"),
            up: Some("SELECT 1;".into()),
            down: down.map(Into::into),
            metadata: None,
        };
        MigrationSet::validate(
            Origin::Directory("test".into()),
            vec![
                raw("1", Some("SELECT 1;")),
                raw("2", Some("")),
                raw("3", Some("SELECT 1;")),
                raw("4", None),
            ],
        )
        .unwrap()
    }

    fn versions(steps: &[Step<'_>]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Apply(m) => format!("+{}", m.version),
                Step::Revert(m) => format!("-{}", m.version),
            })
            .collect()
    }

    fn applied(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn up_applies_missing_versions_in_order_up_to_target() {
        let s = set();
        assert_eq!(
            versions(&plan(&Command::Up { to: None }, &s, &applied(&["2"])).unwrap()),
            ["+1", "+3", "+4"]
        );
        assert_eq!(
            versions(&plan(&Command::Up { to: Some("3".into()) }, &s, &[]).unwrap()),
            ["+1", "+2", "+3"]
        );
    }

    #[test]
    fn down_reverts_newest_first() {
        let s = set();
        let a = applied(&["3", "2", "1"]);
        assert_eq!(
            versions(&plan(&Command::Down(DownTarget::Steps(2)), &s, &a).unwrap()),
            ["-3", "-2"]
        );
        assert_eq!(
            versions(&plan(&Command::Down(DownTarget::To("1".into())), &s, &a).unwrap()),
            ["-3", "-2"]
        );
        assert_eq!(
            versions(&plan(&Command::Down(DownTarget::All), &s, &a).unwrap()),
            ["-3", "-2", "-1"]
        );
        assert_eq!(
            versions(&plan(&Command::Redo { steps: 2 }, &s, &a).unwrap()),
            ["-3", "-2", "+2", "+3"]
        );
    }

    #[test]
    fn down_refuses_irreversible_and_unknown() {
        let s = set();
        assert_eq!(
            plan(&Command::Down(DownTarget::Steps(1)), &s, &applied(&["4", "3"])),
            Err(HarnessError::Irreversible("4_m".into()))
        );
        assert_eq!(
            plan(&Command::Down(DownTarget::Steps(1)), &s, &applied(&["9"])),
            Err(HarnessError::UnknownVersion("9".into()))
        );
    }

    #[test]
    fn out_of_order_pending_is_refused_and_past_target_named() {
        let s = set();
        let up = Command::Up { to: None };
        let a = applied(&["3", "1"]);
        let steps = plan(&up, &s, &a).unwrap();
        assert_eq!(
            check_order(&up, &s, &a, &steps),
            Err(HarnessError::OutOfOrder {
                pending: "2_m".into(),
                newest: "3_m".into()
            })
        );
        let in_order = applied(&["2", "1"]);
        assert!(check_order(&up, &s, &in_order, &plan(&up, &s, &in_order).unwrap()).is_ok());
        let to = Command::Up { to: Some("2".into()) };
        assert_eq!(past_target(&to, &s, &a), Some("2_m".into()));
        assert_eq!(past_target(&to, &s, &in_order), None);
    }

    #[test]
    fn command_versions_are_checked() {
        let s = set();
        assert!(check_command(&Command::Up { to: Some("7".into()) }, &s).is_err());
        assert!(check_command(&Command::Down(DownTarget::Steps(0)), &s).is_err());
        assert!(check_command(&Command::Down(DownTarget::To("2".into())), &s).is_ok());
    }
}
