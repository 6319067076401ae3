/*!
Tenant (schema) names: validation, quoting and advisory-lock keys.

Every schema name the runner touches goes through [`SchemaName`], so nothing reaches SQL
unvalidated. Tenant names are strict (`^[a-z_][a-z0-9_]*$`, 1–63 bytes, not reserved);
the shared schema may also be `public`. Names are quoted in SQL anyway.
*/

use sha2::{Digest, Sha256};
use std::fmt;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1); longer names are silently truncated.
pub const MAX_NAME_BYTES: usize = 63;

/// Why a schema name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("tenant name is empty (a trailing or doubled comma in a list?)")]
    Empty,
    /// The name exceeds PostgreSQL's 63-byte identifier limit.
    #[error("tenant name {0:?} is {1} bytes; PostgreSQL identifiers hold at most 63 (longer names are truncated and can collide)")]
    TooLong(String, usize),
    /// The name has characters outside `[a-z0-9_]` or starts with a digit.
    #[error("tenant name {0:?} is not a plain lower-case identifier (allowed: ^[a-z_][a-z0-9_]*$)")]
    BadCharacters(String),
    /// The name is the run's shared schema.
    #[error("{0:?} is the shared schema, never a tenant")]
    Shared(String),
    /// The name is a system or reserved schema.
    #[error("{0:?} is a reserved schema name (public, information_schema and pg_* are never tenants)")]
    Reserved(String),
}

/// A validated schema name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct SchemaName(String);

impl SchemaName {
    /// Validates a tenant schema name.
    pub fn tenant(name: &str) -> Result<SchemaName, NameError> {
        check_shape(name)?;
        if is_reserved(name) || name == "public" {
            return Err(NameError::Reserved(name.to_string()));
        }
        Ok(SchemaName(name.to_string()))
    }

    /// Validates the shared schema name: like a tenant name, but `public` is allowed.
    pub fn shared(name: &str) -> Result<SchemaName, NameError> {
        check_shape(name)?;
        if is_reserved(name) {
            return Err(NameError::Reserved(name.to_string()));
        }
        Ok(SchemaName(name.to_string()))
    }

    /// The bare name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier (`"acme"`).
    pub fn quoted(&self) -> String {
        quote_ident(&self.0)
    }

    /// The name as a SQL string literal (`'acme'`).
    pub fn literal(&self) -> String {
        quote_literal(&self.0)
    }

    /// The 64-bit key of this schema's session advisory lock.
    ///
    /// Computed in Rust (first 8 bytes of SHA-256 over a namespaced string) so every
    /// version of the tool, on every platform, agrees; `hashtext()` is internal to
    /// PostgreSQL and may change. Keys differ per schema, so runners on different
    /// tenants never wait on each other.
    pub fn lock_key(&self) -> i64 {
        key_of(&format!("migrate-tenants:schema:{}", self.0))
    }
}

impl SchemaName {
    /// Which of `parts` parts (1-based) this tenant belongs to: a hash of the name alone, so
    /// the same tenant is always in the same part, and adding tenants moves none of the others.
    pub fn shard(&self, parts: u32) -> u32 {
        let key = key_of(&format!("migrate-tenants:shard:{}", self.0)) as u64;
        (key % u64::from(parts.max(1))) as u32 + 1
    }
}

/// The advisory-lock key that serializes migrations touching database-wide objects
/// (extensions, roles, ...) across tenants.
pub(crate) fn database_wide_lock_key() -> i64 {
    key_of("migrate-tenants:database-wide")
}

/// The advisory-lock key that serializes the creation of a run journal's tables.
pub(crate) fn journal_lock_key(schema: &str) -> i64 {
    key_of(&format!("migrate-tenants:journal:{schema}"))
}

/// The first 8 bytes of SHA-256 of `text`, as a signed 64-bit key.
fn key_of(text: &str) -> i64 {
    let digest = Sha256::digest(text);
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_shape(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong(name.to_string(), name.len()));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !(first_ok && rest_ok) {
        return Err(NameError::BadCharacters(name.to_string()));
    }
    Ok(())
}

fn is_reserved(name: &str) -> bool {
    name.starts_with("pg_") || name == "information_schema"
}

/// Quotes an identifier for SQL, doubling embedded `"`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL, doubling embedded `'` (standard_conforming_strings is on
/// since PostgreSQL 9.1; an `E` prefix is never used).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["acme", "_x", "tenant_42", &"a".repeat(63)] {
            assert!(SchemaName::tenant(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_hostile_and_reserved_names() {
        let bad = [
            "",
            "x\"; DROP SCHEMA public; --",
            "Upper",
            "1abc",
            "a-b",
            "pg_x",
            "public",
            "information_schema",
            "caf\u{e9}",
            &"a".repeat(64),
        ];
        for name in bad {
            assert!(SchemaName::tenant(name).is_err(), "{name:?} accepted");
        }
        assert!(SchemaName::shared("public").is_ok());
        assert!(SchemaName::shared("pg_catalog").is_err());
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        let a = SchemaName::tenant("acme").unwrap();
        let b = SchemaName::tenant("globex").unwrap();
        assert_eq!(a.lock_key(), SchemaName::tenant("acme").unwrap().lock_key());
        assert_ne!(a.lock_key(), b.lock_key());
        // Pinned: changing the key derivation would let old and new runners race.
        assert_eq!(a.lock_key(), -773419815559660358);
    }
}
