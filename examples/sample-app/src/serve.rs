//! The sample application serving its tenants: the diesel counterpart of looping over schemas
//! with SQLAlchemy's `schema_translate_map`. Tables are declared once, unqualified; a
//! `TenantPool` connection points them at one tenant.
//!
//! ```text
//! sample-app-serve --database-url URL [TENANT ...]   # each tenant: insert a user, read the users back
//! sample-app-serve --database-url URL --bench N      # checkout + SELECT 1: plain pool vs tenant-scoped
//! ```

use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use migrate_tenants::{Runner, TenantPool};
use std::time::Instant;

/// The sample application's migrations (the repository's top-level `migrations/`).
const MIGRATIONS: migrate_tenants::EmbeddedMigrations = migrate_tenants::embed_migrations!("../../migrations");

diesel::table! {
    users (id) {
        id -> Int8,
        email -> Text,
        name -> Text,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let url = match args.iter().position(|a| a == "--database-url") {
        Some(i) if i + 1 < args.len() => {
            let url = args.remove(i + 1);
            args.remove(i);
            url
        }
        _ => std::env::var("DATABASE_URL").map_err(|_| "give --database-url URL or DATABASE_URL")?,
    };
    let pool = Pool::builder()
        .max_size(4)
        .build(ConnectionManager::<PgConnection>::new(&url))?;
    if let Some(i) = args.iter().position(|a| a == "--bench") {
        let n = args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(5000);
        return bench(&pool, n);
    }
    let tenants = TenantPool::new(pool.clone()).require_current(&MIGRATIONS)?;
    let runner = Runner::new(&MIGRATIONS).pool(pool);
    // A new customer signs up: their schema is created and migrated, all or nothing.
    runner.create_tenants(["signup_demo"])?;
    for tenant in args.iter().map(String::as_str).chain(["signup_demo"]) {
        let mut conn = tenants.get(tenant)?;
        conn.transaction(|c| {
            diesel::insert_into(users::table)
                .values((
                    users::email.eq(format!("owner@{tenant}.example")),
                    users::name.eq("Owner"),
                ))
                .execute(c)
        })?;
        let emails: Vec<String> = users::table.select(users::email).order(users::id).load(&mut *conn)?;
        println!("{tenant}: {} user(s): {}", emails.len(), emails.join(", "));
    }
    // And leaves.
    runner.drop_tenants(["signup_demo"])?;
    println!("signup_demo: created, served and dropped");
    Ok(())
}

/// `n` checkouts with one trivial query each, plain vs tenant-scoped, on one tenant.
fn bench(pool: &Pool<ConnectionManager<PgConnection>>, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let runner = Runner::new(&MIGRATIONS).pool(pool.clone());
    runner.create_tenants(["bench_tenant"])?;
    let tenants = TenantPool::new(pool.clone()).require_current(&MIGRATIONS)?;
    let one = |conn: &mut PgConnection| diesel::sql_query("SELECT 1").execute(conn);
    let time =
        |f: &mut dyn FnMut() -> Result<(), Box<dyn std::error::Error>>| -> Result<f64, Box<dyn std::error::Error>> {
            let start = Instant::now();
            for _ in 0..n {
                f()?;
            }
            Ok(start.elapsed().as_secs_f64())
        };
    // Warm up both paths (connections opened, the tenant seen current).
    for _ in 0..50 {
        one(&mut *pool.get()?)?;
        one(&mut *tenants.get("bench_tenant")?)?;
    }
    let plain = time(&mut || Ok(one(&mut *pool.get()?).map(|_| ())?))?;
    let scoped = time(&mut || Ok(one(&mut *tenants.get("bench_tenant")?).map(|_| ())?))?;
    runner.drop_tenants(["bench_tenant"])?;
    println!(
        "checkout + SELECT 1, {n} times: plain {:.1} us, tenant-scoped {:.1} us, ratio {:.2}",
        plain * 1e6 / n as f64,
        scoped * 1e6 / n as f64,
        scoped / plain
    );
    Ok(())
}
