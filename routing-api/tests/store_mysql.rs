//! MySQL/MariaDB-specific store tests: the schema is upstream's, upstream-written databases are
//! read (and their duplicate rows healed), older upstream schemas are upgraded, and the pool
//! recovers after the server goes away.

mod store_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use routing_api::store::{DbKind, Store, StoreConfig};
use store_support::server::{self, columns, indexes, normalize, Column};
use store_support::{tcp_mapping, TestDb, UrlParts, TTL};
use tokio::net::{TcpListener, TcpStream};

/// Expected [`columns`]: (column, column_type, is_nullable, default).
fn cols(spec: &[(&str, &str, &str, Option<&str>)]) -> Vec<Column> {
    spec.iter()
        .map(|(n, t, null, d)| {
            (
                n.to_string(),
                t.to_string(),
                null.to_string(),
                d.map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test]
async fn migrations_create_upstreams_tables_and_indexes() {
    let db = store_support::mysql().await;
    let raw = &db.raw;
    assert_eq!(
        server::tables(raw).await,
        ["migration_data", "router_groups", "routes", "tcp_routes"]
    );

    assert_eq!(
        normalize(columns(raw, "routes").await),
        cols(&[
            ("guid", "varchar(255)", "NO", None),
            ("created_at", "datetime", "YES", None),
            ("updated_at", "datetime", "YES", None),
            ("expires_at", "datetime", "YES", None),
            ("route", "varchar(255)", "NO", None),
            ("port", "int unsigned", "NO", None),
            ("ip", "varchar(255)", "NO", None),
            ("ttl", "int", "YES", None),
            ("log_guid", "varchar(255)", "YES", None),
            ("route_service_url", "varchar(255)", "NO", None),
            ("modification_guid", "varchar(255)", "YES", None),
            ("modification_index", "int unsigned", "YES", None),
        ])
    );
    assert_eq!(
        normalize(columns(raw, "tcp_routes").await),
        cols(&[
            ("guid", "varchar(255)", "NO", None),
            ("created_at", "datetime", "YES", None),
            ("updated_at", "datetime", "YES", None),
            ("expires_at", "datetime", "YES", None),
            ("router_group_guid", "varchar(255)", "NO", None),
            ("host_port", "int", "NO", None),
            ("host_tls_port", "int", "YES", None),
            ("host_ip", "varchar(255)", "NO", None),
            ("sni_hostname", "varchar(255)", "YES", None),
            ("instance_id", "varchar(255)", "YES", None),
            ("external_port", "int", "NO", None),
            ("modification_guid", "varchar(255)", "YES", None),
            ("modification_index", "int unsigned", "YES", None),
            ("ttl", "int", "YES", None),
            ("isolation_segment", "varchar(255)", "YES", None),
        ])
    );
    assert_eq!(
        normalize(columns(raw, "router_groups").await),
        cols(&[
            ("guid", "varchar(255)", "NO", None),
            ("created_at", "datetime", "YES", None),
            ("updated_at", "datetime", "YES", None),
            ("name", "varchar(255)", "YES", None),
            ("type", "varchar(255)", "YES", None),
            ("reservable_ports", "varchar(255)", "YES", None),
        ])
    );
    assert_eq!(
        normalize(columns(raw, "migration_data").await),
        cols(&[
            ("migration_key", "varchar(255)", "NO", None),
            ("current_version", "int", "YES", None),
            ("target_version", "int", "YES", None),
        ])
    );

    for table in ["routes", "tcp_routes", "router_groups", "migration_data"] {
        assert_eq!(
            indexes(raw, table).await,
            server::migrated_indexes(table, "PRIMARY"),
            "{table}"
        );
    }
    let md = raw
        .strings(
            "SELECT migration_key, CAST(current_version AS CHAR), CAST(target_version AS CHAR) \
             FROM migration_data",
        )
        .await;
    assert_eq!(
        md,
        vec![vec![
            Some("routing-api-migration".to_owned()),
            Some("7".to_owned()),
            Some("7".to_owned())
        ]]
    );

    // idempotent: a second run changes nothing
    server::migrating_again_changes_nothing(&db).await;
}

/// The DDL gorm produced for upstream v7, plus a column a newer upstream added.
const UPSTREAM_V7_PLUS: &[&str] = &[
    "CREATE TABLE `migration_data` (`migration_key` varchar(255), `current_version` int, \
     `target_version` int, PRIMARY KEY (`migration_key`))",
    "CREATE TABLE `router_groups` (`guid` varchar(255), `created_at` datetime NULL, \
     `updated_at` datetime NULL, `name` varchar(255), `type` varchar(255), \
     `reservable_ports` varchar(255), PRIMARY KEY (`guid`))",
    "CREATE UNIQUE INDEX idx_rg_name ON `router_groups`(name)",
    "CREATE TABLE `tcp_routes` (`guid` varchar(255), `created_at` datetime NULL, \
     `updated_at` datetime NULL, `expires_at` datetime NULL, `router_group_guid` varchar(255) NOT NULL, \
     `host_port` int NOT NULL, `host_tls_port` int DEFAULT null, `host_ip` varchar(255) NOT NULL, \
     `sni_hostname` varchar(255) DEFAULT null, `instance_id` varchar(255) DEFAULT NULL, \
     `external_port` int NOT NULL, `modification_guid` varchar(255), `modification_index` int unsigned, \
     `ttl` int, `isolation_segment` varchar(255), `terminate_frontend_tls` boolean DEFAULT false, \
     PRIMARY KEY (`guid`))",
    "CREATE UNIQUE INDEX idx_tcp_route ON `tcp_routes`(router_group_guid, host_port, host_ip, \
     external_port, sni_hostname, host_tls_port, terminate_frontend_tls)",
    "CREATE TABLE `routes` (`guid` varchar(255), `created_at` datetime NULL, `updated_at` datetime NULL, \
     `expires_at` datetime NULL, `route` varchar(255) NOT NULL, `port` int unsigned NOT NULL, \
     `ip` varchar(255) NOT NULL, `ttl` int, `log_guid` varchar(255), \
     `route_service_url` varchar(255) NOT NULL, `modification_guid` varchar(255), \
     `modification_index` int unsigned, PRIMARY KEY (`guid`))",
    "CREATE UNIQUE INDEX idx_route ON `routes`(route, port, ip, route_service_url)",
    "INSERT INTO migration_data VALUES ('routing-api-migration', 11, 11)",
];

#[tokio::test]
async fn upstream_schema_is_left_alone_and_its_rows_are_served() {
    let db = store_support::mysql_unmigrated().await;
    server::upstream_schema_is_left_alone(&db, UPSTREAM_V7_PLUS).await;
    // the new column of the newer upstream keeps its default
    let m = server::upstream_rows_are_served_and_merged(
        &db,
        "SELECT COUNT(*) FROM tcp_routes WHERE terminate_frontend_tls = false",
    )
    .await;
    // delete removes every copy
    let (now, future) = server::now_and_in_a_minute(DbKind::Mysql);
    db.raw
        .exec(&format!(
            "INSERT INTO tcp_routes (guid, created_at, updated_at, expires_at, router_group_guid, \
             host_port, host_tls_port, host_ip, sni_hostname, instance_id, external_port, \
             modification_guid, modification_index, ttl, isolation_segment) VALUES \
             ('t4', {now}, {now}, {future}, 'rg', 9002, NULL, '127.0.0.1', '', \
             NULL, 1025, 'x', 0, 60, '')"
        ))
        .await;
    server::deleting_both_mappings_removes_every_row(&db, m).await;
}

/// Upstream's schema as migration V4 left it: no sni_hostname / host_tls_port, a NOT NULL
/// instance_id, a four-column idx_tcp_route, no idx_rg_name.
const UPSTREAM_V4: &[&str] = &[
    "CREATE TABLE `migration_data` (`migration_key` varchar(255), `current_version` int, \
     `target_version` int, PRIMARY KEY (`migration_key`))",
    "CREATE TABLE `router_groups` (`guid` varchar(255), `created_at` datetime NULL, \
     `updated_at` datetime NULL, `name` varchar(255), `type` varchar(255), \
     `reservable_ports` varchar(255), PRIMARY KEY (`guid`))",
    "CREATE TABLE `tcp_routes` (`guid` varchar(255), `created_at` datetime NULL, \
     `updated_at` datetime NULL, `expires_at` datetime NULL, `router_group_guid` varchar(255) NOT NULL, \
     `host_port` int NOT NULL, `host_ip` varchar(255) NOT NULL, `instance_id` varchar(255) NOT NULL, \
     `external_port` int NOT NULL, `modification_guid` varchar(255), `modification_index` int unsigned, \
     `ttl` int, `isolation_segment` varchar(255), PRIMARY KEY (`guid`))",
    "CREATE UNIQUE INDEX idx_tcp_route ON `tcp_routes`(router_group_guid, host_port, host_ip, external_port)",
    "CREATE TABLE `routes` (`guid` varchar(255), `created_at` datetime NULL, `updated_at` datetime NULL, \
     `expires_at` datetime NULL, `route` varchar(255) NOT NULL, `port` int unsigned NOT NULL, \
     `ip` varchar(255) NOT NULL, `ttl` int, `log_guid` varchar(255), \
     `route_service_url` varchar(255) NOT NULL, `modification_guid` varchar(255), \
     `modification_index` int unsigned, PRIMARY KEY (`guid`))",
    "CREATE UNIQUE INDEX idx_route ON `routes`(route, port, ip, route_service_url)",
    "INSERT INTO migration_data VALUES ('routing-api-migration', 1, 4)",
];

#[tokio::test]
async fn older_upstream_schema_is_upgraded_to_v7() {
    let db = store_support::mysql_unmigrated().await;
    server::older_upstream_schema_is_upgraded_to_v7(
        &db,
        UPSTREAM_V4,
        tcp_mapping("rg", 1025, 9001),
    )
    .await;
}

#[tokio::test]
async fn unreachable_server_fails_fast_with_unavailable() {
    let cfg = StoreConfig {
        kind: DbKind::Mysql,
        host: "127.0.0.1".into(),
        port: server::unused_port(),
        schema: "nope".into(),
        username: "root".into(),
        acquire_timeout: Duration::from_secs(1),
        ..StoreConfig::default()
    };
    server::connecting_fails_fast_with_unavailable(&cfg).await;
}

/// A TCP proxy to MariaDB that can be taken down (listener closed, live connections cut) and
/// brought back on the same port.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
    target: String,
}

impl Proxy {
    async fn start(target: String, port: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let up2 = up.clone();
        let target2 = target.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target2.clone();
                let up = up2.clone();
                conns.spawn(async move {
                    if !up.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy {
            port,
            up,
            task: Some(task),
            target,
        }
    }

    /// Closes the listener and every proxied connection (the JoinSet is dropped with the task).
    async fn stop(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    async fn restart(&mut self) {
        *self = Proxy::start(self.target.clone(), self.port).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_recovers_after_the_server_comes_back() {
    let db: TestDb = store_support::mysql().await;
    let parts = UrlParts::parse(&db.url);
    let mut proxy = Proxy::start(format!("{}:{}", parts.host, parts.port), 0).await;
    let cfg = StoreConfig {
        kind: DbKind::Mysql,
        host: "127.0.0.1".into(),
        port: proxy.port,
        schema: db.name.clone(),
        username: parts.user.clone(),
        password: parts.password.clone(),
        acquire_timeout: Duration::from_secs(1),
        ..StoreConfig::default()
    };
    let store = Store::connect(&cfg).await.unwrap();
    store
        .upsert_tcp_route(&tcp_mapping("rg", 1025, 9001), TTL)
        .await
        .unwrap();
    assert_eq!(store.tcp_routes(&[]).await.unwrap().len(), 1);

    proxy.stop().await;
    let started = Instant::now();
    let err = store.tcp_routes(&[]).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let err = store
        .upsert_tcp_route(&tcp_mapping("rg", 1025, 9002), TTL)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );

    proxy.restart().await;
    // same store, no restart: the pool reconnects
    assert_eq!(store.tcp_routes(&[]).await.unwrap().len(), 1);
    store
        .upsert_tcp_route(&tcp_mapping("rg", 1025, 9002), TTL)
        .await
        .unwrap();
    assert_eq!(store.tcp_routes(&[]).await.unwrap().len(), 2);
    store.close().await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_upserts_from_separate_pools_leave_one_row() {
    let db = store_support::mysql().await;
    server::concurrent_upserts_from_separate_pools_leave_one_row(&db).await;
}

// ----- issue 13: expiry indexes, batches in one transaction, deadlines -----

#[tokio::test]
async fn migrate_adds_the_expires_at_indexes_to_a_database_migrated_without_them() {
    let db = store_support::mysql().await;
    server::migrate_adds_the_expires_at_indexes(
        &db,
        [
            "DROP INDEX `idx_routes_expires_at` ON `routes`",
            "DROP INDEX `idx_tcp_routes_expires_at` ON `tcp_routes`",
        ],
    )
    .await;
    // the pruner's query uses it
    let plan = db
        .raw
        .strings("EXPLAIN FORMAT=JSON SELECT guid FROM tcp_routes WHERE expires_at < '2000-01-01'")
        .await;
    assert!(
        plan.iter()
            .flatten()
            .flatten()
            .any(|c| c.contains("\"key\": \"idx_tcp_routes_expires_at\"")),
        "{plan:?}"
    );
}

#[tokio::test]
async fn a_tcp_batch_with_one_failing_mapping_commits_none_of_it() {
    let db = store_support::mysql().await;
    // too long for its column
    server::a_tcp_batch_with_one_failing_mapping_commits_none_of_it(&db, &"x".repeat(300)).await;
}

#[tokio::test]
async fn an_http_batch_with_one_failing_route_commits_none_of_it() {
    let db = store_support::mysql().await;
    server::an_http_batch_with_one_failing_route_commits_none_of_it(&db, &"x".repeat(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_call_blocked_by_a_lock_fails_at_its_deadline_and_the_store_recovers() {
    let db = store_support::mysql().await;
    server::a_store_call_blocked_by_a_lock_fails_at_its_deadline_and_the_store_recovers(&db).await;
}
