//! Embeds the text of every migration under `migrations/` (tenant set) and
//! `migrations_shared/` (shared-schema set, optional) into the binary.
//!
//! `embed_migrations!` (also used, see `src/embedded.rs`) hides the SQL text behind
//! diesel's `Migration` trait, but the runner must read the text before running it
//! (transaction-control and `search_path` checks, single-statement check, one round
//! trip per migration). This script writes the same `include_str!` list the macro
//! writes internally, keeping `metadata.toml` raw so it is validated like a set read
//! from disk. Directory selection follows diesel: plain files and dot-entries are
//! ignored.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (dir, file) in [
        ("migrations", "embedded_migrations.rs"),
        ("migrations_shared", "embedded_shared_migrations.rs"),
    ] {
        println!("cargo:rerun-if-changed={dir}");
        fs::write(out.join(file), embed(&root.join(dir))).expect("write the embedded migrations list");
    }
}

/// The Rust expression listing every migration directory under `dir` (empty if absent).
fn embed(dir: &Path) -> String {
    let mut code = String::from("&[\n");
    for entry in migration_dirs(dir) {
        for file in ["up.sql", "down.sql", "metadata.toml"] {
            println!("cargo:rerun-if-changed={}", entry.join(file).display());
        }
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        writeln!(
            code,
            "    crate::migration_set::EmbeddedFiles {{ dir_name: {name:?}, up: {}, down: {}, metadata: {} }},",
            include(&entry.join("up.sql")),
            include(&entry.join("down.sql")),
            include(&entry.join("metadata.toml")),
        )
        .unwrap();
    }
    code.push(']');
    code
}

/// Subdirectories of `dir`, sorted, skipping files and dot-entries as diesel does.
fn migration_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// `Some(include_str!(path))` when the file exists, `None` otherwise.
fn include(path: &Path) -> String {
    if path.is_file() {
        format!("Some(include_str!({:?}))", path.display().to_string())
    } else {
        "None".to_string()
    }
}
