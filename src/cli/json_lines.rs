/*!
`--format json-lines`: one JSON object per line, streamed. Each tenant's report as it
finishes (`"type": "tenant"`, or `"shared"` for the shared schema), then one `"summary"`
object with everything of the one-document `--format json` but the tenants. A run that
cannot start prints one `"error"` object.
*/

use crate::{FleetReport, TenantReport};
use serde_json::{json, Map, Value};

/// One tenant's line.
pub fn tenant(report: &TenantReport, shared: bool) -> String {
    let kind = if shared { "shared" } else { "tenant" };
    tagged(kind, serde_json::to_value(report).unwrap_or(Value::Null))
}

/// The closing line: the run without its per-tenant reports.
pub fn summary(fleet: &FleetReport) -> String {
    let mut value = serde_json::to_value(fleet).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.remove("tenants");
        map.remove("shared");
    }
    tagged("summary", value)
}

/// The line of a run that could not start.
pub fn error(message: &str, code: i32) -> String {
    tagged("error", json!({ "error": { "message": message, "exit_code": code } }))
}

/// `value` (an object) with `"type": kind` added.
fn tagged(kind: &str, value: Value) -> String {
    let mut line = Map::new();
    line.insert("type".into(), Value::String(kind.into()));
    if let Value::Object(fields) = value {
        line.extend(fields);
    }
    Value::Object(line).to_string()
}
