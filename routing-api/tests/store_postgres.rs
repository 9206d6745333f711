//! PostgreSQL-specific store tests (`sqldb.type: postgres`): the schema is what upstream's gorm
//! models get on PostgreSQL, upstream-written databases are served (and their duplicate rows
//! healed), older upstream schemas are upgraded, migrations are idempotent, batches are all or
//! nothing, and a call blocked by a lock fails at its deadline.

mod store_support;

use std::time::{Duration, Instant};

use routing_api::store::{DbKind, Store, StoreConfig, StoreError};
use sqlx::Connection;
use store_support::{tcp_mapping, Raw, TestDb, TTL};

/// (column, data_type, is_nullable, default) as information_schema reports them.
async fn columns(raw: &Raw, table: &str) -> Vec<(String, String, String, Option<String>)> {
    raw.strings(&format!(
        "SELECT column_name::text, data_type::text, is_nullable::text, column_default::text \
         FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = '{table}' \
         ORDER BY ordinal_position"
    ))
    .await
    .into_iter()
    .map(|r| {
        (
            r[0].clone().unwrap(),
            r[1].clone().unwrap(),
            r[2].clone().unwrap(),
            r[3].clone(),
        )
    })
    .collect()
}

/// (index, unique, columns in order) for each index of `table`, by name.
async fn indexes(raw: &Raw, table: &str) -> Vec<(String, bool, Vec<String>)> {
    let rows = raw
        .strings(&format!(
            "SELECT ic.relname::text, i.indisunique::text, a.attname::text FROM pg_index i \
             JOIN pg_class ic ON ic.oid = i.indexrelid \
             JOIN pg_class t ON t.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = t.relnamespace \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
             WHERE n.nspname = current_schema() AND t.relname = '{table}' \
             ORDER BY ic.relname, k.ord"
        ))
        .await;
    let mut out: Vec<(String, bool, Vec<String>)> = Vec::new();
    for r in rows {
        let (name, unique, col) = (
            r[0].clone().unwrap(),
            r[1].as_deref() == Some("true"),
            r[2].clone().unwrap(),
        );
        match out.last_mut() {
            Some(last) if last.0 == name => last.2.push(col),
            _ => out.push((name, unique, vec![col])),
        }
    }
    out
}

fn cols(spec: &[(&str, &str, &str)]) -> Vec<(String, String, String, Option<String>)> {
    spec.iter()
        .map(|(c, t, n)| (c.to_string(), t.to_string(), n.to_string(), None))
        .collect()
}

fn idx(spec: &[(&str, bool, &[&str])]) -> Vec<(String, bool, Vec<String>)> {
    let mut v: Vec<_> = spec
        .iter()
        .map(|(n, u, c)| (n.to_string(), *u, c.iter().map(|s| s.to_string()).collect()))
        .collect();
    v.sort();
    v
}

const TS: &str = "timestamp with time zone";

#[tokio::test]
async fn migrations_create_upstreams_tables_as_gorm_makes_them_on_postgres() {
    let db = store_support::postgres().await;
    let raw = &db.raw;
    let tables: Vec<_> = raw
        .strings(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() ORDER BY table_name",
        )
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert_eq!(
        tables,
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
    assert_eq!(
        indexes(raw, "routes").await,
        idx(&[
            ("routes_pkey", true, &["guid"]),
            (
                "idx_route",
                true,
                &["route", "port", "ip", "route_service_url"]
            ),
            ("idx_routes_expires_at", false, &["expires_at"]),
        ])
    );
    assert_eq!(
        indexes(raw, "tcp_routes").await,
        idx(&[
            ("tcp_routes_pkey", true, &["guid"]),
            (
                "idx_tcp_route",
                true,
                &[
                    "router_group_guid",
                    "host_port",
                    "host_ip",
                    "external_port",
                    "sni_hostname",
                    "host_tls_port"
                ],
            ),
            ("idx_tcp_routes_expires_at", false, &["expires_at"]),
        ])
    );
    assert_eq!(
        indexes(raw, "router_groups").await,
        idx(&[
            ("router_groups_pkey", true, &["guid"]),
            ("idx_rg_name", true, &["name"])
        ])
    );
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
    let before = (
        columns(raw, "tcp_routes").await,
        indexes(raw, "tcp_routes").await,
    );
    db.store.migrate().await.unwrap();
    db.store.migrate().await.unwrap();
    assert_eq!(
        before,
        (
            columns(raw, "tcp_routes").await,
            indexes(raw, "tcp_routes").await
        )
    );
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
    db.raw.exec("DROP INDEX idx_routes_expires_at").await;
    db.raw.exec("DROP INDEX idx_tcp_routes_expires_at").await;
    for _ in 0..2 {
        db.store.migrate().await.unwrap();
        for (table, index) in [
            ("routes", "idx_routes_expires_at"),
            ("tcp_routes", "idx_tcp_routes_expires_at"),
        ] {
            assert!(
                indexes(&db.raw, table)
                    .await
                    .iter()
                    .any(|(name, _, cols)| name == index && cols == &["expires_at"]),
                "{table} lacks {index}"
            );
        }
    }
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
    for ddl in UPSTREAM_V11 {
        db.raw.exec(ddl).await;
    }
    let before = (
        columns(&db.raw, "tcp_routes").await,
        indexes(&db.raw, "tcp_routes").await,
    );
    db.store.migrate().await.unwrap();
    let mut expected = before.clone();
    expected.1.push((
        "idx_tcp_routes_expires_at".to_owned(),
        false,
        vec!["expires_at".to_owned()],
    ));
    expected.1.sort();
    assert_eq!(
        expected,
        (
            columns(&db.raw, "tcp_routes").await,
            indexes(&db.raw, "tcp_routes").await
        ),
        "upstream's columns and indexes untouched; only our expires_at index added"
    );
    assert_eq!(
        db.raw
            .int("SELECT current_version FROM migration_data")
            .await,
        11
    );

    // rows as upstream writes them: a duplicate pair (sni '' and NULL), a -1 TLS port
    let future = "now() + interval '60 seconds'";
    db.raw
        .exec(&format!(
            "INSERT INTO router_groups VALUES ('2d5b392b-8aef-4043-79e5-bbb5a72627d4', now(), now(), \
             'default-tcp', 'tcp', '1024-1033'); \
             INSERT INTO routes VALUES ('r1', now(), now(), {future}, 'myapp.example.com', 9001, \
             '127.0.0.1', 60, 'my-guid', '', 'dab23546', 4); \
             INSERT INTO tcp_routes (guid, created_at, updated_at, expires_at, router_group_guid, \
             host_port, host_tls_port, host_ip, sni_hostname, instance_id, external_port, \
             modification_guid, modification_index, ttl, isolation_segment) VALUES \
             ('t1', '2026-01-01 00:00:00Z', now(), {future}, 'rg', 9001, NULL, '127.0.0.1', '', \
             'inst-1', 1025, 'c51ffac9', 0, 60, ''), \
             ('t2', '2026-01-01 00:00:01Z', now(), {future}, 'rg', 9001, NULL, '127.0.0.1', NULL, \
             'inst-1', 1025, 'ce144fda', 0, 60, ''), \
             ('t3', now(), now(), {future}, 'rg', 9002, -1, '127.0.0.1', NULL, NULL, 1025, \
             '4925156b', 2, 60, NULL)"
        ))
        .await;
    let s = &db.store;
    assert_eq!(s.router_groups().await.unwrap()[0].name, "default-tcp");
    let routes = s.http_routes().await.unwrap();
    assert_eq!(
        serde_json::to_string(&routes).unwrap(),
        r#"[{"route":"myapp.example.com","port":9001,"ip":"127.0.0.1","ttl":60,"log_guid":"my-guid","modification_tag":{"guid":"dab23546","index":4}}]"#
    );
    let tcp = s.tcp_routes(&[]).await.unwrap();
    assert_eq!(tcp.len(), 3);
    assert!(tcp
        .iter()
        .all(|m| m.backend_tls_port == 0 && m.backend_sni_hostname.is_none()));
    assert_eq!(s.tcp_routes(&["".to_owned()]).await.unwrap().len(), 3);

    // re-upserting the duplicated mapping merges it into the oldest row, updated in place
    let mut m = tcp_mapping("rg", 1025, 9001);
    m.backend_ip = "127.0.0.1".into();
    let (stored, created) = s.upsert_tcp_route(&m, TTL).await.unwrap();
    assert!(!created);
    assert_eq!(
        (
            stored.modification_tag.guid.as_str(),
            stored.modification_tag.index
        ),
        ("c51ffac9", 1)
    );
    assert_eq!(db.raw.count("tcp_routes").await, 2);
    // the -1 row is "no TLS port" too, updated in place and canonicalised to NULL
    m.backend_port = 9002;
    let (stored, created) = s.upsert_tcp_route(&m, TTL).await.unwrap();
    assert!(!created);
    assert_eq!(stored.modification_tag.index, 3);
    assert_eq!(
        db.raw
            .int("SELECT COUNT(*) FROM tcp_routes WHERE host_tls_port IS NULL AND sni_hostname IS NULL")
            .await,
        2
    );
    // upstream's newer columns keep their defaults
    assert_eq!(
        db.raw
            .int("SELECT COUNT(*) FROM tcp_routes WHERE NOT enable_backend_mtls AND NOT terminate_frontend_tls")
            .await,
        2
    );
    assert!(s.delete_tcp_route(&m).await.unwrap().is_some());
    m.backend_port = 9001;
    assert!(s.delete_tcp_route(&m).await.unwrap().is_some());
    assert_eq!(db.raw.count("tcp_routes").await, 0);
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
    for ddl in UPSTREAM_V4 {
        db.raw.exec(ddl).await;
    }
    db.store.migrate().await.unwrap();
    let fresh = store_support::postgres().await;
    let mut upgraded = columns(&db.raw, "tcp_routes").await;
    let mut expected = columns(&fresh.raw, "tcp_routes").await;
    upgraded.sort();
    expected.sort();
    assert_eq!(upgraded, expected);
    for table in ["tcp_routes", "router_groups", "routes"] {
        assert_eq!(
            indexes(&db.raw, table).await,
            indexes(&fresh.raw, table).await,
            "{table}"
        );
    }
    assert_eq!(
        db.raw
            .strings("SELECT current_version::text, target_version::text FROM migration_data")
            .await,
        vec![vec![Some("7".to_owned()), Some("7".to_owned())]]
    );
    let mut m = tcp_mapping("rg", 1025, 9001);
    m.instance_id = String::new(); // NULL, allowed since V7
    let (_, created) = db.store.upsert_tcp_route(&m, TTL).await.unwrap();
    assert!(created);
    db.store.migrate().await.unwrap();
}

#[tokio::test]
async fn a_tcp_batch_with_one_failing_mapping_commits_none_of_it() {
    let db = store_support::postgres().await;
    let existing = tcp_mapping("rg", 1024, 9000);
    let (before, _) = db.store.upsert_tcp_route(&existing, TTL).await.unwrap();
    // 600 mappings: more than one multi-row statement; the last one holds a NUL, which
    // PostgreSQL text refuses
    let mut batch: Vec<_> = (0..600u16)
        .map(|i| (tcp_mapping("rg", 1025 + i % 10, 10_000 + i), TTL))
        .collect();
    batch.insert(0, (existing.clone(), TTL));
    let mut bad = tcp_mapping("rg", 1024, 20_000);
    bad.instance_id = "bad\0id".into();
    batch.push((bad, TTL));
    let err = db.store.upsert_tcp_routes(&batch).await.unwrap_err();
    assert!(!matches!(err, StoreError::Timeout { .. }), "{err}");
    assert_eq!(
        db.raw.count("tcp_routes").await,
        1,
        "nothing of the batch committed"
    );
    assert_eq!(db.store.tcp_routes(&[]).await.unwrap(), vec![before]);
}

#[tokio::test]
async fn an_http_batch_with_one_failing_route_commits_none_of_it() {
    let db = store_support::postgres().await;
    let mut batch: Vec<_> = (0..50)
        .map(|i| {
            (
                store_support::http_route(&format!("r{i}.example.com"), 8080),
                TTL,
            )
        })
        .collect();
    let mut bad = store_support::http_route("bad.example.com", 8080);
    bad.log_guid = "bad\0guid".into();
    batch.push((bad, TTL));
    assert!(db.store.upsert_http_routes(&batch).await.is_err());
    assert_eq!(db.raw.count("routes").await, 0);
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

// multi-threaded: the timed-out call's connection is rolled back and returned to the pool by
// a background task, which must be able to run while the test thread waits
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_call_blocked_by_a_lock_fails_at_its_deadline_and_the_store_recovers() {
    let db = store_support::postgres().await;
    let store = db
        .store
        .clone()
        .with_query_timeout(Duration::from_millis(500));
    // another session holds the router-group write lock (PostgreSQL waits for it forever)
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT * FROM migration_data FOR UPDATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let started = Instant::now();
    let err = store
        .create_router_group(&store_support::router_group("g", "tcp", "2000"))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            StoreError::Timeout {
                operation: "create router group",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_unavailable(), "answered like a database failure");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    assert_eq!(db.raw.count("router_groups").await, 0);
    store
        .create_router_group(&store_support::router_group("g", "tcp", "2000"))
        .await
        .expect("create after the lock is released");
    assert_eq!(db.raw.count("router_groups").await, 1);
    holder.close().await.unwrap();
    db.store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_upserts_from_separate_pools_leave_one_row() {
    let db: TestDb = store_support::postgres().await;
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(Store::connect_url(&db.url).await.unwrap());
    }
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = stores[i % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut m = tcp_mapping("rg", 1025, 9001);
            m.backend_tls_port = if i % 3 == 0 { -1 } else { 0 };
            store.upsert_tcp_route(&m, TTL).await
        }));
    }
    let mut created = 0;
    for t in tasks {
        created += usize::from(t.await.unwrap().unwrap().1);
    }
    assert_eq!(created, 1);
    assert_eq!(db.raw.count("tcp_routes").await, 1);
    for s in stores {
        s.close().await;
    }
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

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let started = Instant::now();
    let err = Store::connect(&StoreConfig {
        port,
        acquire_timeout: Duration::from_secs(1),
        ..cfg
    })
    .await
    .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
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
