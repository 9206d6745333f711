//! What the MySQL and PostgreSQL store tests (`store_mysql.rs`, `store_postgres.rs`) share:
//! reading a server's schema back (tables, columns, indexes), rows as upstream writes them,
//! and the bodies of the tests both files run, each taking the test's database (and what
//! differs per backend: upstream's DDL, a value the backend refuses). Each test file keeps
//! one `#[tokio::test]` per behaviour, under the same name as the body it calls.

use std::time::{Duration, Instant};

use routing_api::store::{DbKind, Store, StoreConfig, StoreError};
use routing_api_client::models::TcpRouteMapping;

use super::{tcp_mapping, Admin, Raw, TestDb, TTL};

/// A column as `information_schema` reports it: (name, type, is_nullable, default); the
/// type is MySQL's `column_type` or PostgreSQL's `data_type`.
pub type Column = (String, String, String, Option<String>);
/// An index: (name, unique, columns in index order).
pub type Index = (String, bool, Vec<String>);

// ----- the schema, read back -----

/// The tables of the test database, by name.
pub async fn tables(raw: &Raw) -> Vec<String> {
    let sql = match raw {
        Raw::Mysql(_) => {
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
             WHERE table_schema = DATABASE() ORDER BY table_name"
        }
        Raw::Postgres(_) => {
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() ORDER BY table_name"
        }
        Raw::Sqlite(_) => unreachable!("a MySQL or PostgreSQL database"),
    };
    raw.strings(sql)
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect()
}

/// The columns of `table`, in table order.
pub async fn columns(raw: &Raw, table: &str) -> Vec<Column> {
    let sql = match raw {
        Raw::Mysql(_) => format!(
            "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR), CAST(is_nullable AS CHAR), \
             CAST(column_default AS CHAR) FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = '{table}' ORDER BY ordinal_position"
        ),
        Raw::Postgres(_) => format!(
            "SELECT column_name::text, data_type::text, is_nullable::text, column_default::text \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = '{table}' \
             ORDER BY ordinal_position"
        ),
        Raw::Sqlite(_) => unreachable!("a MySQL or PostgreSQL database"),
    };
    raw.strings(&sql)
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

/// [`columns`] with MariaDB's spellings made MySQL 8's: `DEFAULT NULL` of a nullable column
/// (printed as the string "NULL") is no default, and no display widths (`int(11)`,
/// `int(10) unsigned`). PostgreSQL's columns are left as they are.
pub fn normalize(mut c: Vec<Column>) -> Vec<Column> {
    for col in &mut c {
        if col.3.as_deref() == Some("NULL") {
            col.3 = None;
        }
        col.1 = col
            .1
            .replace("int(11)", "int")
            .replace("int(10) unsigned", "int unsigned");
    }
    c
}

/// The indexes of `table` (the primary key included), in byte order of their names
/// (whatever the server's collation).
pub async fn indexes(raw: &Raw, table: &str) -> Vec<Index> {
    let (sql, unique) = match raw {
        Raw::Mysql(_) => (
            format!(
                "SELECT CAST(index_name AS CHAR), CAST(non_unique AS CHAR), CAST(column_name AS CHAR) \
                 FROM information_schema.statistics \
                 WHERE table_schema = DATABASE() AND table_name = '{table}' \
                 ORDER BY index_name, seq_in_index"
            ),
            "0",
        ),
        Raw::Postgres(_) => (
            format!(
                "SELECT ic.relname::text, i.indisunique::text, a.attname::text FROM pg_index i \
                 JOIN pg_class ic ON ic.oid = i.indexrelid \
                 JOIN pg_class t ON t.oid = i.indrelid \
                 JOIN pg_namespace n ON n.oid = t.relnamespace \
                 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
                 JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
                 WHERE n.nspname = current_schema() AND t.relname = '{table}' \
                 ORDER BY ic.relname, k.ord"
            ),
            "true",
        ),
        Raw::Sqlite(_) => unreachable!("a MySQL or PostgreSQL database"),
    };
    let mut out: Vec<Index> = Vec::new();
    for r in raw.strings(&sql).await {
        let (name, col) = (r[0].clone().unwrap(), r[2].clone().unwrap());
        match out.last_mut() {
            Some(last) if last.0 == name => last.2.push(col),
            _ => out.push((name, r[1].as_deref() == Some(unique), vec![col])),
        }
    }
    out.sort();
    out
}

/// An expected index: (name, unique, columns).
pub type IndexSpec<'a> = (&'a str, bool, &'a [&'a str]);

/// Expected [`indexes`], in any order.
pub fn idx(spec: &[IndexSpec<'_>]) -> Vec<Index> {
    let mut v: Vec<Index> = spec
        .iter()
        .map(|(n, u, c)| (n.to_string(), *u, c.iter().map(|s| s.to_string()).collect()))
        .collect();
    v.sort();
    v
}

/// The indexes of `table` in a migrated database: upstream's version-7 ones, the primary key
/// named `primary`, and ours beyond upstream's schema (`expires_at`, for the pruner and the
/// lists).
pub fn migrated_indexes(table: &str, primary: &str) -> Vec<Index> {
    let expires_at: &[&str] = &["expires_at"];
    let (key, mut spec): (&[&str], Vec<IndexSpec>) = match table {
        "routes" => (
            &["guid"],
            vec![
                (
                    "idx_route",
                    true,
                    &["route", "port", "ip", "route_service_url"],
                ),
                ("idx_routes_expires_at", false, expires_at),
            ],
        ),
        "tcp_routes" => (
            &["guid"],
            vec![
                (
                    "idx_tcp_route",
                    true,
                    &[
                        "router_group_guid",
                        "host_port",
                        "host_ip",
                        "external_port",
                        "sni_hostname",
                        "host_tls_port",
                    ],
                ),
                ("idx_tcp_routes_expires_at", false, expires_at),
            ],
        ),
        "router_groups" => (&["guid"], vec![("idx_rg_name", true, &["name"])]),
        "migration_data" => (&["migration_key"], vec![]),
        other => panic!("no table {other} in the schema"),
    };
    spec.push((primary, true, key));
    idx(&spec)
}

// ----- upstream's rows -----

/// The backend's SQL for "now" and for "60 seconds from now" (both UTC).
pub fn now_and_in_a_minute(kind: DbKind) -> (&'static str, &'static str) {
    match kind {
        DbKind::Mysql => (
            "UTC_TIMESTAMP()",
            "DATE_ADD(UTC_TIMESTAMP(), INTERVAL 60 SECOND)",
        ),
        _ => ("now()", "now() + interval '60 seconds'"),
    }
}

/// Rows as upstream writes them (from the captures): a router group, an HTTP route, and TCP
/// mappings with host_tls_port NULL and -1, sni '' and NULL, instance_id NULL: `t1` and `t2`
/// are upstream's duplicate pair for one mapping (sni '' and sni NULL), `t1` the older.
async fn insert_upstream_rows(db: &TestDb) {
    let (now, future) = now_and_in_a_minute(db.kind);
    // a zone on the fixed timestamps, where the column has one (PostgreSQL's timestamptz)
    let zone = if db.kind == DbKind::Postgres { "Z" } else { "" };
    for sql in [
        format!(
            "INSERT INTO router_groups VALUES ('2d5b392b-8aef-4043-79e5-bbb5a72627d4', {now}, \
             {now}, 'default-tcp', 'tcp', '1024-1033')"
        ),
        format!(
            "INSERT INTO routes VALUES ('r1', {now}, {now}, {future}, 'myapp.example.com', 9001, \
             '127.0.0.1', 60, 'my-guid', '', 'dab23546', 4)"
        ),
        format!(
            "INSERT INTO tcp_routes (guid, created_at, updated_at, expires_at, router_group_guid, \
             host_port, host_tls_port, host_ip, sni_hostname, instance_id, external_port, \
             modification_guid, modification_index, ttl, isolation_segment) VALUES \
             ('t1', '2026-01-01 00:00:00{zone}', {now}, {future}, 'rg', 9001, NULL, '127.0.0.1', '', \
             'inst-1', 1025, 'c51ffac9', 0, 60, ''), \
             ('t2', '2026-01-01 00:00:01{zone}', {now}, {future}, 'rg', 9001, NULL, '127.0.0.1', NULL, \
             'inst-1', 1025, 'ce144fda', 0, 60, ''), \
             ('t3', {now}, {now}, {future}, 'rg', 9002, -1, '127.0.0.1', NULL, \
             NULL, 1025, '4925156b', 2, 60, NULL)"
        ),
    ] {
        db.raw.exec(&sql).await;
    }
}

// ----- test bodies -----

/// `ddl` builds an upstream schema at migration version 11 (more columns, a wider
/// idx_tcp_route); migrating leaves upstream's columns and indexes untouched (only our
/// expires_at index is added) and the version at 11.
pub async fn upstream_schema_is_left_alone(db: &TestDb, ddl: &[&str]) {
    for sql in ddl {
        db.raw.exec(sql).await;
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
            .int("SELECT CAST(current_version AS SIGNED) FROM migration_data")
            .await,
        11
    );
}

/// Upstream's rows are served as upstream serves them; re-upserting the duplicated mapping
/// merges it into one row (the oldest), updated in place, and the -1 row is "no TLS port"
/// too, updated in place and canonicalised to NULL. `newer_columns_keep_defaults` counts the
/// rows whose columns of a newer upstream hold their defaults. Returns the mapping of the
/// -1 row, for the caller's deletes.
pub async fn upstream_rows_are_served_and_merged(
    db: &TestDb,
    newer_columns_keep_defaults: &str,
) -> TcpRouteMapping {
    insert_upstream_rows(db).await;
    let s = &db.store;
    let groups = s.router_groups().await.unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].name, "default-tcp");
    let routes = s.http_routes().await.unwrap();
    assert_eq!(
        serde_json::to_string(&routes).unwrap(),
        r#"[{"route":"myapp.example.com","port":9001,"ip":"127.0.0.1","ttl":60,"log_guid":"my-guid","modification_tag":{"guid":"dab23546","index":4}}]"#
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
    assert_eq!(db.raw.int(newer_columns_keep_defaults).await, 2);
    m
}

/// Deleting `m` (backend port 9002) and then its sibling on 9001 removes every row of both.
pub async fn deleting_both_mappings_removes_every_row(db: &TestDb, mut m: TcpRouteMapping) {
    assert!(db.store.delete_tcp_route(&m).await.unwrap().is_some());
    m.backend_port = 9001;
    assert!(db.store.delete_tcp_route(&m).await.unwrap().is_some());
    assert_eq!(db.raw.count("tcp_routes").await, 0);
}

/// `ddl` builds upstream's schema as migration V4 left it; migrating gives the columns (order
/// aside: upstream appended them), indexes and version of a fresh schema, and `m` can then be
/// created.
pub async fn older_upstream_schema_is_upgraded_to_v7(
    db: &TestDb,
    ddl: &[&str],
    m: TcpRouteMapping,
) {
    for sql in ddl {
        db.raw.exec(sql).await;
    }
    db.store.migrate().await.unwrap();
    let fresh = match db.kind {
        DbKind::Mysql => super::mysql().await,
        _ => super::postgres().await,
    };
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
    assert_eq!(db.raw.count("migration_data").await, 1);
    for column in ["current_version", "target_version"] {
        let sql = format!("SELECT CAST({column} AS SIGNED) FROM migration_data");
        assert_eq!(db.raw.int(&sql).await, 7, "{column}");
    }
    // and it works
    let (_, created) = db.store.upsert_tcp_route(&m, TTL).await.unwrap();
    assert!(created);
    db.store.migrate().await.unwrap();
}

/// Migrating again (twice) changes nothing of `tcp_routes`.
pub async fn migrating_again_changes_nothing(db: &TestDb) {
    let before = (
        columns(&db.raw, "tcp_routes").await,
        indexes(&db.raw, "tcp_routes").await,
    );
    db.store.migrate().await.unwrap();
    db.store.migrate().await.unwrap();
    assert_eq!(
        before,
        (
            columns(&db.raw, "tcp_routes").await,
            indexes(&db.raw, "tcp_routes").await
        )
    );
}

/// A database migrated by an older version (version 7, the expires_at indexes dropped by
/// `drops`) gains them from every later migration.
pub async fn migrate_adds_the_expires_at_indexes(db: &TestDb, drops: [&str; 2]) {
    for sql in drops {
        db.raw.exec(sql).await;
    }
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
}

/// A port nothing listens on.
pub fn unused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

/// Connecting with `cfg` (a server that is not there, a short acquire timeout) fails with
/// [`StoreError::Unavailable`] within 5 s.
pub async fn connecting_fails_fast_with_unavailable(cfg: &StoreConfig) {
    let started = Instant::now();
    let err = Store::connect(cfg).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(matches!(err, StoreError::Unavailable(_)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// Several stores (separate pools, as separate processes would have) racing on one mapping
/// leave one row, created once.
pub async fn concurrent_upserts_from_separate_pools_leave_one_row(db: &TestDb) {
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

/// 600 mappings (more than one multi-row statement) and one the database refuses (its
/// instance id `bad_instance_id`): the batch fails, nothing of it is committed, and the
/// existing mapping is unchanged.
pub async fn a_tcp_batch_with_one_failing_mapping_commits_none_of_it(
    db: &TestDb,
    bad_instance_id: &str,
) {
    let existing = tcp_mapping("rg", 1024, 9000);
    let (before, _) = db.store.upsert_tcp_route(&existing, TTL).await.unwrap();
    let mut batch: Vec<_> = (0..600u16)
        .map(|i| (tcp_mapping("rg", 1025 + i % 10, 10_000 + i), TTL))
        .collect();
    batch.insert(0, (existing.clone(), TTL));
    let mut bad = tcp_mapping("rg", 1024, 20_000);
    bad.instance_id = bad_instance_id.to_owned();
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

/// 50 routes and one the database refuses (its log guid `bad_log_guid`): the batch fails
/// and nothing of it is committed.
pub async fn an_http_batch_with_one_failing_route_commits_none_of_it(
    db: &TestDb,
    bad_log_guid: &str,
) {
    let mut batch: Vec<_> = (0..50)
        .map(|i| (super::http_route(&format!("r{i}.example.com"), 8080), TTL))
        .collect();
    let mut bad = super::http_route("bad.example.com", 8080);
    bad.log_guid = bad_log_guid.to_owned();
    batch.push((bad, TTL));
    assert!(db.store.upsert_http_routes(&batch).await.is_err());
    assert_eq!(db.raw.count("routes").await, 0);
}

/// While another session holds the router-group write lock (MySQL's innodb_lock_wait_timeout
/// is 50 s; PostgreSQL waits for it forever), a router-group write fails at the store's
/// deadline, answered like a database failure (503); nothing is committed, and once the lock
/// is released the pool serves again. (Run it on a multi-threaded runtime: the timed-out
/// call's connection is rolled back and returned to the pool by a background task, which
/// must be able to run while the test thread waits.)
pub async fn a_store_call_blocked_by_a_lock_fails_at_its_deadline_and_the_store_recovers(
    db: &TestDb,
) {
    let store = db
        .store
        .clone()
        .with_query_timeout(Duration::from_millis(500));
    let mut holder = Admin::connect(db.kind, &db.url).await.unwrap();
    holder.exec("BEGIN").await.unwrap();
    holder
        .exec("SELECT * FROM migration_data FOR UPDATE")
        .await
        .unwrap();
    let started = Instant::now();
    let err = store
        .create_router_group(&super::router_group("g", "tcp", "2000"))
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
    holder.exec("ROLLBACK").await.unwrap();
    assert_eq!(db.raw.count("router_groups").await, 0);
    store
        .create_router_group(&super::router_group("g", "tcp", "2000"))
        .await
        .expect("create after the lock is released");
    assert_eq!(db.raw.count("router_groups").await, 1);
    holder.close().await.unwrap();
    // every connection back (the abandoned one rolled back) before the database is dropped
    db.store.close().await;
}
