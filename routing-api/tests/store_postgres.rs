//! PostgreSQL-specific store tests (`sqldb.type: postgres`): the schema is what upstream's gorm
//! models get on PostgreSQL, upstream-written databases are served (and their duplicate rows
//! healed), older upstream schemas are upgraded, migrations are idempotent, batches are all or
//! nothing, and a call blocked by a lock fails at its deadline.

mod store_support;

use std::time::Duration;

use routing_api::store::{DbKind, Store, StoreConfig};
use sqlx::Connection;
use store_support::server::{self, columns, indexes, Column};
use store_support::{tcp_mapping, TTL};

/// Expected [`columns`]: (column, data_type, is_nullable), no default.
fn cols(spec: &[(&str, &str, &str)]) -> Vec<Column> {
    spec.iter()
        .map(|(c, t, n)| (c.to_string(), t.to_string(), n.to_string(), None))
        .collect()
}

const TS: &str = "timestamp with time zone";

#[tokio::test]
async fn migrations_create_upstreams_tables_as_gorm_makes_them_on_postgres() {
    let db = store_support::postgres().await;
    let raw = &db.raw;
    assert_eq!(
        server::tables(raw).await,
        ["migration_data", "router_groups", "routes", "tcp_routes"]
    );
    assert_eq!(
        columns(raw, "routes").await,
        cols(&[
            ("guid", "text", "NO"),
            ("created_at", TS, "YES"),
            ("updated_at", TS, "YES"),
            ("expires_at", TS, "YES"),
            ("route", "text", "NO"),
            ("port", "bigint", "NO"),
            ("ip", "text", "NO"),
            ("ttl", "bigint", "YES"),
            ("log_guid", "text", "YES"),
            ("route_service_url", "text", "NO"),
            ("modification_guid", "text", "YES"),
            ("modification_index", "bigint", "YES"),
        ])
    );
    // `DEFAULT NULL` is no default in information_schema
    assert_eq!(
        columns(raw, "tcp_routes").await,
        cols(&[
            ("guid", "text", "NO"),
            ("created_at", TS, "YES"),
            ("updated_at", TS, "YES"),
            ("expires_at", TS, "YES"),
            ("router_group_guid", "text", "NO"),
            ("host_port", "integer", "NO"),
            ("host_tls_port", "bigint", "YES"),
            ("host_ip", "text", "NO"),
            ("sni_hostname", "text", "YES"),
            ("instance_id", "text", "YES"),
            ("external_port", "integer", "NO"),
            ("modification_guid", "text", "YES"),
            ("modification_index", "bigint", "YES"),
            ("ttl", "bigint", "YES"),
            ("isolation_segment", "text", "YES"),
        ])
    );
    assert_eq!(
        columns(raw, "router_groups").await,
        cols(&[
            ("guid", "text", "NO"),
            ("created_at", TS, "YES"),
            ("updated_at", TS, "YES"),
            ("name", "text", "YES"),
            ("type", "text", "YES"),
            ("reservable_ports", "text", "YES"),
        ])
    );
    assert_eq!(
        columns(raw, "migration_data").await,
        cols(&[
            ("migration_key", "text", "NO"),
            ("current_version", "bigint", "YES"),
            ("target_version", "bigint", "YES"),
        ])
    );
    for table in ["routes", "tcp_routes", "router_groups"] {
        assert_eq!(
            indexes(raw, table).await,
            server::migrated_indexes(table, &format!("{table}_pkey")),
            "{table}"
        );
    }
    assert_eq!(
        raw.strings(
            "SELECT migration_key, current_version::text, target_version::text FROM migration_data"
        )
        .await,
        vec![vec![
            Some("routing-api-migration".to_owned()),
            Some("7".to_owned()),
            Some("7".to_owned())
        ]]
    );

    // idempotent on an existing database: nothing changes, rows survive
    db.store
        .upsert_tcp_route(&tcp_mapping("rg", 1025, 9001), TTL)
        .await
        .unwrap();
    server::migrating_again_changes_nothing(&db).await;
    assert_eq!(db.store.tcp_routes(&[]).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_of_a_fresh_database_all_succeed() {
    let db = store_support::postgres_unmigrated().await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = Store::connect_url(&db.url).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let r = store.migrate().await;
            store.close().await;
            r
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("migrate");
    }
    assert_eq!(db.raw.count("migration_data").await, 1);
    assert_eq!(
        db.raw
            .int("SELECT current_version FROM migration_data")
            .await,
        7
    );
}

#[tokio::test]
async fn migrate_adds_the_expires_at_indexes_and_the_pruner_uses_them() {
    let db = store_support::postgres().await;
    server::migrate_adds_the_expires_at_indexes(
        &db,
        [
            "DROP INDEX idx_routes_expires_at",
            "DROP INDEX idx_tcp_routes_expires_at",
        ],
    )
    .await;
    // the pruner's condition can be answered from the index (sequential scans ruled out,
    // since the planner prefers one on a tiny table)
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut conn)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN DELETE FROM tcp_routes WHERE expires_at < '2000-01-01T00:00:00Z'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(
        plan.iter().any(|l| l.contains("idx_tcp_routes_expires_at")),
        "{plan:?}"
    );
    conn.close().await.unwrap();
}

/// The DDL gorm v2 produces on PostgreSQL for upstream's current models (migration 11: more
/// columns, a wider idx_tcp_route).
const UPSTREAM_V11: &[&str] = &[
    "CREATE TABLE migration_data (migration_key text, current_version bigint, \
     target_version bigint, PRIMARY KEY (migration_key))",
    "CREATE TABLE router_groups (guid text, created_at timestamptz, updated_at timestamptz, \
     name text, type text, reservable_ports text, PRIMARY KEY (guid))",
    "CREATE UNIQUE INDEX idx_rg_name ON router_groups (name)",
    "CREATE TABLE tcp_routes (guid text, created_at timestamptz, updated_at timestamptz, \
     expires_at timestamptz, router_group_guid text NOT NULL, host_port integer NOT NULL, \
     host_tls_port bigint DEFAULT null, host_ip text NOT NULL, sni_hostname text DEFAULT null, \
     sni_rewrite_hostname text DEFAULT null, instance_id text DEFAULT null, \
     external_port integer NOT NULL, modification_guid text, modification_index bigint, \
     ttl bigint, isolation_segment text, terminate_frontend_tls boolean DEFAULT false, \
     alpns text, enable_backend_mtls boolean DEFAULT false, PRIMARY KEY (guid))",
    "CREATE UNIQUE INDEX idx_tcp_route ON tcp_routes (router_group_guid, host_port, host_ip, \
     external_port, sni_hostname, host_tls_port, enable_backend_mtls)",
    "CREATE TABLE routes (guid text, created_at timestamptz, updated_at timestamptz, \
     expires_at timestamptz, route text NOT NULL, port bigint NOT NULL, ip text NOT NULL, \
     ttl bigint, log_guid text, route_service_url text NOT NULL, modification_guid text, \
     modification_index bigint, PRIMARY KEY (guid))",
    "CREATE UNIQUE INDEX idx_route ON routes (route, port, ip, route_service_url)",
    "INSERT INTO migration_data VALUES ('routing-api-migration', 11, 11)",
];

#[tokio::test]
async fn upstream_schema_is_left_alone_and_its_rows_are_served() {
    let db = store_support::postgres_unmigrated().await;
    server::upstream_schema_is_left_alone(&db, UPSTREAM_V11).await;
    // upstream's newer columns keep their defaults
    let m = server::upstream_rows_are_served_and_merged(
        &db,
        "SELECT COUNT(*) FROM tcp_routes WHERE NOT enable_backend_mtls AND NOT terminate_frontend_tls",
    )
    .await;
    server::deleting_both_mappings_removes_every_row(&db, m).await;
}

/// Upstream's schema on PostgreSQL as migration V4 left it: no sni_hostname / host_tls_port,
/// a NOT NULL instance_id, a four-column idx_tcp_route, no idx_rg_name.
const UPSTREAM_V4: &[&str] = &[
    "CREATE TABLE migration_data (migration_key text, current_version bigint, \
     target_version bigint, PRIMARY KEY (migration_key))",
    "CREATE TABLE router_groups (guid text, created_at timestamptz, updated_at timestamptz, \
     name text, type text, reservable_ports text, PRIMARY KEY (guid))",
    "CREATE TABLE tcp_routes (guid text, created_at timestamptz, updated_at timestamptz, \
     expires_at timestamptz, router_group_guid text NOT NULL, host_port integer NOT NULL, \
     host_ip text NOT NULL, instance_id text NOT NULL, external_port integer NOT NULL, \
     modification_guid text, modification_index bigint, ttl bigint, isolation_segment text, \
     PRIMARY KEY (guid))",
    "CREATE UNIQUE INDEX idx_tcp_route ON tcp_routes (router_group_guid, host_port, host_ip, external_port)",
    "CREATE TABLE routes (guid text, created_at timestamptz, updated_at timestamptz, \
     expires_at timestamptz, route text NOT NULL, port bigint NOT NULL, ip text NOT NULL, \
     ttl bigint, log_guid text, route_service_url text NOT NULL, modification_guid text, \
     modification_index bigint, PRIMARY KEY (guid))",
    "CREATE UNIQUE INDEX idx_route ON routes (route, port, ip, route_service_url)",
    "INSERT INTO migration_data VALUES ('routing-api-migration', 1, 4)",
];

#[tokio::test]
async fn older_upstream_schema_is_upgraded_to_v7() {
    let db = store_support::postgres_unmigrated().await;
    let mut m = tcp_mapping("rg", 1025, 9001);
    m.instance_id = String::new(); // NULL, allowed since V7
    server::older_upstream_schema_is_upgraded_to_v7(&db, UPSTREAM_V4, m).await;
}

#[tokio::test]
async fn a_tcp_batch_with_one_failing_mapping_commits_none_of_it() {
    let db = store_support::postgres().await;
    // a NUL, which PostgreSQL text refuses
    server::a_tcp_batch_with_one_failing_mapping_commits_none_of_it(&db, "bad\0id").await;
}

#[tokio::test]
async fn an_http_batch_with_one_failing_route_commits_none_of_it() {
    let db = store_support::postgres().await;
    server::an_http_batch_with_one_failing_route_commits_none_of_it(&db, "bad\0guid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_tcp_batch_is_written_in_one_call() {
    let db = store_support::postgres().await;
    let batch: Vec<_> = (0..1200u16)
        .map(|i| (tcp_mapping("rg", 1024 + i % 100, 10_000 + i), TTL))
        .collect();
    let done = db.store.upsert_tcp_routes(&batch).await.unwrap();
    assert!(done.iter().all(|(_, created)| *created));
    assert_eq!(db.raw.count("tcp_routes").await, 1200);
    let again = db.store.upsert_tcp_routes(&batch).await.unwrap();
    assert!(again
        .iter()
        .all(|(m, created)| !created && m.modification_tag.index == 1));
    assert_eq!(db.raw.count("tcp_routes").await, 1200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_call_blocked_by_a_lock_fails_at_its_deadline_and_the_store_recovers() {
    let db = store_support::postgres().await;
    server::a_store_call_blocked_by_a_lock_fails_at_its_deadline_and_the_store_recovers(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_upserts_from_separate_pools_leave_one_row() {
    let db = store_support::postgres().await;
    server::concurrent_upserts_from_separate_pools_leave_one_row(&db).await;
}

#[tokio::test]
async fn the_sqldb_settings_reach_the_server_and_an_unreachable_one_fails_fast() {
    let db = store_support::postgres().await;
    let parts = store_support::UrlParts::parse(&db.url);
    let cfg = StoreConfig {
        kind: DbKind::Postgres,
        host: parts.host.clone(),
        port: parts.port,
        schema: db.name.clone(),
        username: parts.user.clone(),
        password: parts.password.clone(),
        ..StoreConfig::default()
    };
    let store = Store::connect(&cfg).await.unwrap();
    assert_eq!(store.kind(), DbKind::Postgres);
    store
        .upsert_tcp_route(&tcp_mapping("rg", 1025, 9001), TTL)
        .await
        .unwrap();
    assert_eq!(db.raw.count("tcp_routes").await, 1);
    store.close().await;

    server::connecting_fails_fast_with_unavailable(&StoreConfig {
        port: server::unused_port(),
        acquire_timeout: Duration::from_secs(1),
        ..cfg
    })
    .await;
}

/// The built routing-api binary (`cargo build -p routing-api` first) on `sqldb.type: postgres`
/// migrates the database, holds its lock there and serves a route it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routing_api_binary_on_postgres_serves_a_route_it_was_given() {
    use integration::routing_api::{Database, RoutingApi};
    let db = store_support::postgres_unmigrated().await;
    let parts = store_support::UrlParts::parse(&db.url);
    let api = RoutingApi::start(Database::postgres(
        &parts.host,
        parts.port,
        &db.name,
        &parts.user,
        &parts.password,
    ))
    .await;
    let route = r#"[{"route":"pg.example.com","port":9001,"ip":"127.0.0.1","ttl":60,"log_guid":"pg-guid"}]"#;
    let r = api.post("/routing/v1/routes", route).await;
    assert_eq!(r.status_line, "HTTP/1.1 201 Created");
    let r = api.get("/routing/v1/routes").await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    let body = r.body_str();
    assert!(
        body.contains(
            r#""route":"pg.example.com","port":9001,"ip":"127.0.0.1","ttl":60,"log_guid":"pg-guid""#
        ),
        "{body}"
    );
    // the lock it holds lives in the same PostgreSQL database, owned by this instance
    assert_eq!(
        db.raw.strings("SELECT owner FROM locks").await,
        vec![vec![Some(api.uuid.clone())]]
    );
    // the route is in PostgreSQL, in upstream's table
    assert_eq!(
        db.raw
            .int("SELECT COUNT(*) FROM routes WHERE route = 'pg.example.com'")
            .await,
        1
    );
    drop(api);
}
