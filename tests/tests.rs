//! Integration tests for the library, the stock `migrate-tenants` binary and an application binary, against a throwaway PostgreSQL cluster
//! (see `support`). One test binary, so the cluster starts once; each test has its own database.

mod support;

#[path = "it/helpers.rs"]
mod helpers;

#[path = "it/app.rs"]
mod app;
#[path = "it/authoring.rs"]
mod authoring;
#[path = "it/canary.rs"]
mod canary;
#[path = "it/citus.rs"]
mod citus;
#[path = "it/concurrency.rs"]
mod concurrency;
#[path = "it/config.rs"]
mod config;
#[path = "it/confirm.rs"]
mod confirm;
#[path = "it/connection.rs"]
mod connection;
#[path = "it/databases.rs"]
mod databases;
#[path = "it/failures.rs"]
mod failures;
#[path = "it/faults.rs"]
mod faults;
#[path = "it/generate.rs"]
mod generate;
#[path = "it/isolation.rs"]
mod isolation;
#[path = "it/journal.rs"]
mod journal;
#[path = "it/library.rs"]
mod library;
#[path = "it/lifecycle.rs"]
mod lifecycle;
#[path = "it/lint.rs"]
mod lint;
#[path = "it/names.rs"]
mod names;
#[path = "it/non_transactional.rs"]
mod non_transactional;
#[path = "it/ordering.rs"]
mod ordering;
#[path = "it/plans.rs"]
mod plans;
#[path = "it/search_path.rs"]
mod search_path;
#[path = "it/session.rs"]
mod session;
#[path = "it/shared.rs"]
mod shared;
#[path = "it/streams.rs"]
mod streams;
#[path = "it/tenant_pool.rs"]
mod tenant_pool;
#[path = "it/tenants.rs"]
mod tenants;
#[path = "it/validation.rs"]
mod validation;
