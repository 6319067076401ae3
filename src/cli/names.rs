/*!
Migration names for human output: `2024-01-01-000005_add_users_last_login_at` instead of the
bare version `20240101000005`. The CLI remembers its sets once, before a run; a version no set
knows (applied by a newer release) stays bare. The shared schema's versions are looked up in
the shared set, the tenants' in the tenant set.
*/

use crate::{MigrationSet, SchemaName};
use std::collections::HashMap;
use std::sync::OnceLock;

/// Version -> directory name, for the tenant set and the shared set.
struct Names {
    tenant: HashMap<String, String>,
    shared: HashMap<String, String>,
    shared_schema: String,
}

static NAMES: OnceLock<Names> = OnceLock::new();

fn map(set: Option<&MigrationSet>) -> HashMap<String, String> {
    set.iter()
        .flat_map(|set| set.migrations())
        .map(|m| (m.version.clone(), m.dir_name.clone()))
        .collect()
}

/// Remembers the directory names of the sets (the first call wins).
pub fn remember(tenant: Option<&MigrationSet>, shared: Option<&MigrationSet>, shared_schema: &str) {
    let _ = NAMES.set(Names {
        tenant: map(tenant),
        shared: map(shared),
        shared_schema: shared_schema.to_string(),
    });
}

/// The name of a tenant migration's `version` (see [`of`]).
pub fn tenant(version: Option<&str>) -> String {
    let name = version.and_then(|v| NAMES.get().and_then(|names| names.tenant.get(v)));
    match (name, version) {
        (Some(name), _) => name.clone(),
        (None, Some(version)) => version.to_string(),
        (None, None) => "none".into(),
    }
}

/// The name of `version` applied in `schema`: the migration's directory name, or the version
/// itself when unknown; `none` for no version.
pub fn of(schema: &SchemaName, version: Option<&str>) -> String {
    let Some(version) = version else {
        return "none".into();
    };
    let name = NAMES
        .get()
        .and_then(|names| match schema.as_str() == names.shared_schema {
            true => names.shared.get(version),
            false => names.tenant.get(version),
        });
    name.cloned().unwrap_or_else(|| version.to_string())
}
