//! Times `MigrationSet::validate` on a large generated `up.sql` (a seed-data migration).
//!
//! ```text
//! cargo run --release -p migrate-tenants-set --example validate_bench [-- SIZE_MB]
//! ```
//!
//! The file (50 MB unless a size is given) holds hundreds of thousands of `INSERT`s whose
//! string literals contain `;`, newlines and escaped quotes, comments, and a few routines with
//! dollar-quoted and `BEGIN ATOMIC` bodies. Validation should take about as long as reading it.

use migrate_tenants_set::{MigrationSet, Origin, RawMigration};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

/// A small deterministic generator (no dependency, same file on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn routine(sql: &mut String, n: usize) {
    let _ = write!(
        sql,
        "-- routine {n}; its body hides `;`, COMMIT and SET search_path\n\
         CREATE OR REPLACE FUNCTION seed_touch_{n}() RETURNS trigger LANGUAGE plpgsql AS $fn$\n\
         BEGIN\n  NEW.note := 'touched; ' || NEW.note;\n  -- COMMIT;\n  PERFORM set_config('x', 'y', true);\n  RETURN NEW;\nEND;\n$fn$;\n\
         DO $$ BEGIN PERFORM 1; END $$;\n\
         /* block comment ; /* nested ; */ COMMIT; */\n\
         CREATE FUNCTION seed_sum_{n}(a int, b int) RETURNS int LANGUAGE sql\n\
         BEGIN ATOMIC\n  SELECT CASE WHEN a > 0 THEN a + b ELSE b END;\nEND;\n"
    );
}

fn generate(target_bytes: usize) -> (String, usize) {
    let mut rng = Lcg(42);
    let mut sql = String::with_capacity(target_bytes + 4096);
    sql.push_str(
        "-- Seed data\nCREATE TABLE seed_data (\n  id bigint PRIMARY KEY,\n  name text NOT NULL,\n  note text,\n  payload text\n);\n",
    );
    let mut id = 0usize;
    let mut inserts = 0usize;
    while sql.len() < target_bytes {
        if inserts % 50_000 == 0 {
            routine(&mut sql, inserts / 50_000);
        }
        let rows = 1 + (rng.next() % 3) as usize;
        sql.push_str("INSERT INTO seed_data (id, name, note, payload) VALUES\n");
        for r in 0..rows {
            id += 1;
            let k = rng.next();
            let _ = write!(
                sql,
                "  ({id}, 'customer {k:x}; \"quoted\"', 'line one; still the note\nline two -- not a comment\n', E'it\\'s /* not a comment */ {}'){}",
                k % 1000,
                if r + 1 == rows { ";\n" } else { ",\n" }
            );
        }
        inserts += 1;
    }
    (sql, inserts)
}

fn main() {
    let mb: f64 = std::env::args().nth(1).map_or(50.0, |a| a.parse().expect("size in MB"));
    let (up, inserts) = generate((mb * 1024.0 * 1024.0) as usize);
    let size_mb = up.len() as f64 / (1024.0 * 1024.0);
    let lines = up.bytes().filter(|&b| b == b'\n').count();
    println!("up.sql: {size_mb:.1} MB, {lines} lines, {inserts} INSERT statements");

    // Baseline: one pass over the bytes (what reading the file costs, roughly).
    let t = Instant::now();
    let copy = up.clone();
    let checksum = copy
        .bytes()
        .fold(0u32, |acc, b| acc.wrapping_mul(31).wrapping_add(u32::from(b)));
    let baseline = t.elapsed();
    println!(
        "baseline (copy + one pass): {:.3} s (checksum {checksum:x})",
        baseline.as_secs_f64()
    );

    let raw = vec![RawMigration {
        dir_name: "2024-01-01-000001_seed_data".into(),
        up: Some(up),
        down: Some("DROP TABLE seed_data;".into()),
        metadata: None,
    }];
    let t = Instant::now();
    let set = MigrationSet::validate(Origin::Directory(PathBuf::from("bench")), raw);
    let elapsed = t.elapsed().as_secs_f64();
    match set {
        Ok(set) => println!("validate: ok, {} migration(s)", set.migrations().len()),
        Err(e) => panic!("the generated set should be valid: {e}"),
    }
    println!("validate: {elapsed:.3} s, {:.1} MB/s", size_mb / elapsed);
}
