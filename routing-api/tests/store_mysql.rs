//! MySQL/MariaDB-specific store tests: the schema is upstream's, upstream-written databases are
//! read (and their duplicate rows healed), older upstream schemas are upgraded, and the pool
//! recovers after the server goes away.

mod store_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use routing_api::store::{DbKind, Store, StoreConfig, StoreError};
use sqlx::Connection;
use store_support::{tcp_mapping, Raw, TestDb, UrlParts, TTL};
use tokio::net::{TcpListener, TcpStream};

/// (column, column_type, is_nullable, default) as information_schema reports them.
async fn columns(raw: &Raw, table: &str) -> Vec<(String, String, String, Option<String>)> {
    raw.strings(&format!(
        "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR), CAST(is_nullable AS CHAR), \
         CAST(column_default AS CHAR) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = '{table}' ORDER BY ordinal_position"
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

/// (index, non_unique, columns in order) for each index of `table`.
async fn indexes(raw: &Raw, table: &str) -> Vec<(String, String, Vec<String>)> {
    let rows = raw
        .strings(&format!(
            "SELECT CAST(index_name AS CHAR), CAST(non_unique AS CHAR), CAST(column_name AS CHAR) \
             FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name = '{table}' \
             ORDER BY index_name, seq_in_index"
        ))
        .await;
    let mut out: Vec<(String, String, Vec<String>)> = Vec::new();
    for r in rows {
        let (name, non_unique, col) = (
            r[0].clone().unwrap(),
            r[1].clone().unwrap(),
            r[2].clone().unwrap(),
        );
        match out.last_mut() {
            Some(last) if last.0 == name => last.2.push(col),
            _ => out.push((name, non_unique, vec![col])),
        }
    }
    // byte order (PRIMARY first), whatever the server's collation
    out.sort();
    out
}

fn cols(
    spec: &[(&str, &str, &str, Option<&str>)],
) -> Vec<(String, String, String, Option<String>)> {
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

fn idx(spec: &[(&str, &str, &[&str])]) -> Vec<(String, String, Vec<String>)> {
    spec.iter()
        .map(|(n, u, c)| {
            (
                n.to_string(),
                u.to_string(),
                c.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect()
}

/// MariaDB prints `DEFAULT NULL` of a nullable column as the string "NULL".
fn normalize(
    mut c: Vec<(String, String, String, Option<String>)>,
) -> Vec<(String, String, String, Option<String>)> {
    for col in &mut c {
        if col.3.as_deref() == Some("NULL") {
            col.3 = None;
        }
        // MariaDB / MySQL 5.7 print display widths: int(11), int(10) unsigned
        col.1 = col
            .1
            .replace("int(11)", "int")
            .replace("int(10) unsigned", "int unsigned");
    }
    c
}

#[tokio::test]
async fn migrations_create_upstreams_tables_and_indexes() {
    let db = store_support::mysql().await;
    let raw = &db.raw;
    let tables = raw
        .strings(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
             WHERE table_schema = DATABASE() ORDER BY table_name",
        )
        .await;
    let tables: Vec<_> = tables.into_iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(
        tables,
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

    assert_eq!(
        indexes(raw, "routes").await,
        idx(&[
            ("PRIMARY", "0", &["guid"]),
            (
                "idx_route",
                "0",
                &["route", "port", "ip", "route_service_url"]
            ),
            // ours, beyond upstream's schema: for the pruner and the lists
            ("idx_routes_expires_at", "1", &["expires_at"]),
        ])
    );
    assert_eq!(
        indexes(raw, "tcp_routes").await,
        idx(&[
            ("PRIMARY", "0", &["guid"]),
            (
                "idx_tcp_route",
                "0",
                &[
                    "router_group_guid",
                    "host_port",
                    "host_ip",
                    "external_port",
                    "sni_hostname",
                    "host_tls_port"
                ],
            ),
            ("idx_tcp_routes_expires_at", "1", &["expires_at"]),
        ])
    );
    assert_eq!(
        indexes(raw, "router_groups").await,
        idx(&[("PRIMARY", "0", &["guid"]), ("idx_rg_name", "0", &["name"])])
    );
    assert_eq!(
        indexes(raw, "migration_data").await,
        idx(&[("PRIMARY", "0", &["migration_key"])])
    );
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
    for ddl in UPSTREAM_V7_PLUS {
        db.raw.exec(ddl).await;
    }
    let before = (
        columns(&db.raw, "tcp_routes").await,
        indexes(&db.raw, "tcp_routes").await,
    );
    db.store.migrate().await.unwrap();
    // upstream's columns and indexes untouched; only our expires_at index added
    let mut expected = before.clone();
    expected.1.push((
        "idx_tcp_routes_expires_at".to_owned(),
        "1".to_owned(),
        vec!["expires_at".to_owned()],
    ));
    assert_eq!(
        expected,
        (
            columns(&db.raw, "tcp_routes").await,
            indexes(&db.raw, "tcp_routes").await
        )
    );
    assert_eq!(
        db.raw
            .int("SELECT CAST(current_version AS SIGNED) FROM migration_data")
            .await,
        11
    );

    // rows as upstream writes them (from the captures): a router group, an HTTP route,
    // TCP mappings with host_tls_port NULL and -1, sni '' and NULL, instance_id NULL
    let future = "DATE_ADD(UTC_TIMESTAMP(), INTERVAL 60 SECOND)";
    for sql in [
        "INSERT INTO router_groups VALUES ('2d5b392b-8aef-4043-79e5-bbb5a72627d4', UTC_TIMESTAMP(), \
         UTC_TIMESTAMP(), 'default-tcp', 'tcp', '1024-1033')"
            .to_owned(),
        format!(
            "INSERT INTO routes VALUES ('r1', UTC_TIMESTAMP(), UTC_TIMESTAMP(), {future}, \
             'myapp.example.com', 9001, '127.0.0.1', 60, 'my-guid', '', 'dab23546', 4)"
        ),
        // upstream's duplicate pair for the same mapping (sni '' and sni NULL)
        format!(
            "INSERT INTO tcp_routes (guid, created_at, updated_at, expires_at, router_group_guid, \
             host_port, host_tls_port, host_ip, sni_hostname, instance_id, external_port, \
             modification_guid, modification_index, ttl, isolation_segment) VALUES \
             ('t1', '2026-01-01 00:00:00', UTC_TIMESTAMP(), {future}, 'rg', 9001, NULL, '127.0.0.1', '', \
             'inst-1', 1025, 'c51ffac9', 0, 60, ''), \
             ('t2', '2026-01-01 00:00:01', UTC_TIMESTAMP(), {future}, 'rg', 9001, NULL, '127.0.0.1', NULL, \
             'inst-1', 1025, 'ce144fda', 0, 60, ''), \
             ('t3', UTC_TIMESTAMP(), UTC_TIMESTAMP(), {future}, 'rg', 9002, -1, '127.0.0.1', NULL, \
             NULL, 1025, '4925156b', 2, 60, NULL)"
        ),
    ] {
        db.raw.exec(&sql).await;
    }
    let s = &db.store;
    let groups = s.router_groups().await.unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].name, "default-tcp");
    let routes = s.http_routes().await.unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(
        serde_json::to_string(&routes[0]).unwrap(),
        r#"{"route":"myapp.example.com","port":9001,"ip":"127.0.0.1","ttl":60,"log_guid":"my-guid","modification_tag":{"guid":"dab23546","index":4}}"#
    );
    let mut tcp = s.tcp_routes(&[]).await.unwrap();
    tcp.sort_by_key(|m| (m.backend_port, m.modification_tag.guid.clone()));
    assert_eq!(tcp.len(), 3);
    assert!(tcp
        .iter()
        .all(|m| m.backend_tls_port == 0 && m.backend_sni_hostname.is_none()));
    assert_eq!(tcp[2].instance_id, "");
    assert_eq!(tcp[2].isolation_segment, "");
    assert_eq!(
        s.tcp_routes(&["".to_owned()]).await.unwrap().len(),
        3,
        "NULL segment is ''"
    );

    // re-upserting the duplicated mapping merges it into one row (the oldest), updated in place
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
    // the -1 row is found by "no TLS port" too, updated in place and canonicalised to NULL
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
    // the new columns of the newer upstream keep their defaults
    assert_eq!(
        db.raw
            .int("SELECT COUNT(*) FROM tcp_routes WHERE terminate_frontend_tls = false")
            .await,
        2
    );
    // delete removes every copy
    db.raw
        .exec(&format!(
            "INSERT INTO tcp_routes (guid, created_at, updated_at, expires_at, router_group_guid, \
             host_port, host_tls_port, host_ip, sni_hostname, instance_id, external_port, \
             modification_guid, modification_index, ttl, isolation_segment) VALUES \
             ('t4', UTC_TIMESTAMP(), UTC_TIMESTAMP(), {future}, 'rg', 9002, NULL, '127.0.0.1', '', \
             NULL, 1025, 'x', 0, 60, '')"
        ))
        .await;
    assert!(s.delete_tcp_route(&m).await.unwrap().is_some());
    m.backend_port = 9001;
    assert!(s.delete_tcp_route(&m).await.unwrap().is_some());
    assert_eq!(db.raw.count("tcp_routes").await, 0);
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
    for ddl in UPSTREAM_V4 {
        db.raw.exec(ddl).await;
    }
    db.store.migrate().await.unwrap();
    let fresh = store_support::mysql().await;
    // same columns (order aside: upstream appended them) and the same indexes as a fresh schema
    let mut upgraded = normalize(columns(&db.raw, "tcp_routes").await);
    let mut expected = normalize(columns(&fresh.raw, "tcp_routes").await);
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
            .strings("SELECT CAST(current_version AS CHAR), CAST(target_version AS CHAR) FROM migration_data")
            .await,
        vec![vec![Some("7".to_owned()), Some("7".to_owned())]]
    );
    // and it works
    let (_, created) = db
        .store
        .upsert_tcp_route(&tcp_mapping("rg", 1025, 9001), TTL)
        .await
        .unwrap();
    assert!(created);
    db.store.migrate().await.unwrap();
}

#[tokio::test]
async fn unreachable_server_fails_fast_with_unavailable() {
    // a port nothing listens on
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let cfg = StoreConfig {
        kind: DbKind::Mysql,
        host: "127.0.0.1".into(),
        port,
        schema: "nope".into(),
        username: "root".into(),
        acquire_timeout: Duration::from_secs(1),
        ..StoreConfig::default()
    };
    let started = Instant::now();
    let err = Store::connect(&cfg).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(matches!(err, StoreError::Unavailable(_)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
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
    // several stores (separate pools, as separate processes would have) racing on one mapping
    let db = store_support::mysql().await;
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

// ----- issue 13: expiry indexes, batches in one transaction, deadlines -----

#[tokio::test]
async fn migrate_adds_the_expires_at_indexes_to_a_database_migrated_without_them() {
    let db = store_support::mysql().await;
    // a database migrated by an older version: version 7, no expires_at indexes
    db.raw
        .exec("DROP INDEX `idx_routes_expires_at` ON `routes`")
        .await;
    db.raw
        .exec("DROP INDEX `idx_tcp_routes_expires_at` ON `tcp_routes`")
        .await;
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
    let existing = tcp_mapping("rg", 1024, 9000);
    let (before, _) = db.store.upsert_tcp_route(&existing, TTL).await.unwrap();
    // 600 mappings: more than one multi-row statement; the last one too long for its column
    let mut batch: Vec<_> = (0..600u16)
        .map(|i| (tcp_mapping("rg", 1025 + i % 10, 10_000 + i), TTL))
        .collect();
    batch.insert(0, (existing.clone(), TTL));
    let mut bad = tcp_mapping("rg", 1024, 20_000);
    bad.instance_id = "x".repeat(300);
    batch.push((bad, TTL));
    let err = db.store.upsert_tcp_routes(&batch).await.unwrap_err();
    assert!(!matches!(err, StoreError::Timeout { .. }), "{err}");
    assert_eq!(
        db.raw.count("tcp_routes").await,
        1,
        "nothing of the batch committed"
    );
    let listed = db.store.tcp_routes(&[]).await.unwrap();
    assert_eq!(listed, vec![before], "the existing mapping is unchanged");
}

#[tokio::test]
async fn an_http_batch_with_one_failing_route_commits_none_of_it() {
    let db = store_support::mysql().await;
    let mut batch: Vec<_> = (0..50)
        .map(|i| {
            (
                store_support::http_route(&format!("r{i}.example.com"), 8080),
                TTL,
            )
        })
        .collect();
    let mut bad = store_support::http_route("bad.example.com", 8080);
    bad.log_guid = "x".repeat(300);
    batch.push((bad, TTL));
    assert!(db.store.upsert_http_routes(&batch).await.is_err());
    assert_eq!(db.raw.count("routes").await, 0);
}

// multi-threaded: the timed-out call's connection is rolled back and returned to the pool by
// a background task, which must be able to run while the test thread waits
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_call_blocked_by_a_lock_fails_at_its_deadline_and_the_store_recovers() {
    let db = store_support::mysql().await;
    let store = db
        .store
        .clone()
        .with_query_timeout(Duration::from_millis(500));
    // another session holds the router-group write lock (innodb_lock_wait_timeout is 50 s)
    let mut holder = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
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
    assert!(
        err.is_unavailable(),
        "answered like a database failure (503)"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    // nothing was committed, and the pool serves again
    assert_eq!(db.raw.count("router_groups").await, 0);
    store
        .create_router_group(&store_support::router_group("g", "tcp", "2000"))
        .await
        .expect("create after the lock is released");
    assert_eq!(db.raw.count("router_groups").await, 1);
    // every connection back (the abandoned one rolled back) before the database is dropped
    db.store.close().await;
}
