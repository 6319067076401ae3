// Cargo sees the embedded files, but not a newly added migration directory: rebuild when the
// directory changes (what diesel's embed_migrations! documents too).
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
