//! SQLite-specific store tests: file creation, WAL mode, schema and NULL-safe identity index.

mod store_support;

use std::time::Duration;

use routing_api::store::{DbKind, Store, StoreConfig, StoreError};
use store_support::{tcp_mapping, TTL};

#[tokio::test]
async fn creates_the_file_and_parent_directory_and_uses_wal() {
    let dir = store_support::temp_dir();
    let path = dir.join("nested/dir/routing-api.db");
    assert!(!path.exists());
    let cfg = StoreConfig {
        kind: DbKind::Sqlite,
        sqlite_path: path.clone(),
        ..StoreConfig::default()
    };
    let store = Store::connect(&cfg).await.unwrap();
    assert_eq!(store.kind(), DbKind::Sqlite);
    store.migrate().await.unwrap();
    assert!(path.exists());
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(mode, "wal");

    // schema: upstream's tables and index names
    let objects: Vec<(String, String)> = sqlx::query_as(
        "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
    )
    .fetch_all(&raw)
    .await
    .unwrap();
    let objects: Vec<(&str, &str)> = objects
        .iter()
        .map(|(t, n)| (t.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        objects,
        [
            ("index", "idx_rg_name"),
            ("index", "idx_route"),
            ("index", "idx_routes_expires_at"),
            ("index", "idx_tcp_route"),
            ("index", "idx_tcp_routes_expires_at"),
            ("table", "migration_data"),
            ("table", "router_groups"),
            ("table", "routes"),
            ("table", "tcp_routes"),
        ]
    );
    let tcp_columns: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('tcp_routes') ORDER BY cid")
            .fetch_all(&raw)
            .await
            .unwrap();
    assert_eq!(
        tcp_columns,
        [
            "guid",
            "created_at",
            "updated_at",
            "expires_at",
            "router_group_guid",
            "host_port",
            "host_tls_port",
            "host_ip",
            "sni_hostname",
            "instance_id",
            "external_port",
            "modification_guid",
            "modification_index",
            "ttl",
            "isolation_segment",
        ]
    );
    let route_columns: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('routes') ORDER BY cid")
            .fetch_all(&raw)
            .await
            .unwrap();
    assert_eq!(
        route_columns,
        [
            "guid",
            "created_at",
            "updated_at",
            "expires_at",
            "route",
            "port",
            "ip",
            "ttl",
            "log_guid",
            "route_service_url",
            "modification_guid",
            "modification_index",
        ]
    );
    // the unique index treats a missing TLS port / SNI as one value, even for raw inserts
    store
        .upsert_tcp_route(&tcp_mapping("rg", 1025, 9001), TTL)
        .await
        .unwrap();
    let dup = sqlx::query(
        "INSERT INTO tcp_routes (guid, router_group_guid, host_port, host_tls_port, host_ip, \
         sni_hostname, external_port) VALUES ('x', 'rg', 9001, NULL, '10.0.0.2', NULL, 1025)",
    )
    .execute(&raw)
    .await
    .unwrap_err();
    assert!(dup.to_string().contains("UNIQUE"), "{dup}");
    // timestamps are fixed-width UTC text
    let expires: String = sqlx::query_scalar("SELECT expires_at FROM tcp_routes")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(
        expires.len(),
        "2026-01-01 00:00:00.000000".len(),
        "{expires}"
    );
    raw.close().await;

    // reopening an existing file keeps the data
    store.close().await;
    let store = Store::connect(&cfg).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.tcp_routes(&[]).await.unwrap().len(), 1);
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn connect_url_and_in_memory() {
    let dir = store_support::temp_dir();
    let url = format!("sqlite://{}", dir.join("via-url.db").display());
    let store = Store::connect_url(&url).await.unwrap();
    store.migrate().await.unwrap();
    store
        .upsert_tcp_route(&tcp_mapping("rg", 1025, 9001), TTL)
        .await
        .unwrap();
    assert_eq!(store.tcp_routes(&[]).await.unwrap().len(), 1);
    store.close().await;

    let mem = Store::connect_url("sqlite::memory:").await.unwrap();
    mem.migrate().await.unwrap();
    mem.upsert_tcp_route(&tcp_mapping("rg", 1025, 9001), TTL)
        .await
        .unwrap();
    assert_eq!(mem.tcp_routes(&[]).await.unwrap().len(), 1);

    match Store::connect_url("mssql://user:secret@localhost/db").await {
        Err(StoreError::Config(msg)) => assert!(!msg.contains("secret"), "{msg}"),
        other => panic!("expected Config error, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn unopenable_file_is_an_error() {
    let dir = store_support::temp_dir();
    // a directory where the database file should be
    let path = dir.join("is-a-dir");
    std::fs::create_dir_all(&path).unwrap();
    let cfg = StoreConfig {
        kind: DbKind::Sqlite,
        sqlite_path: path,
        acquire_timeout: Duration::from_secs(1),
        ..StoreConfig::default()
    };
    let err = Store::connect(&cfg).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let _ = std::fs::remove_dir_all(dir);
}

// ----- issue 13: durability and expiry indexes -----

#[tokio::test]
async fn store_connections_fsync_every_commit_synchronous_full_in_wal_mode() {
    let db = store_support::sqlite().await;
    // read back from the store's own pooled connections (the pragma is per connection)
    for _ in 0..3 {
        let (synchronous, journal) = db.store.sqlite_durability().await.unwrap().unwrap();
        assert_eq!(synchronous, 2, "PRAGMA synchronous = FULL");
        assert_eq!(journal, "wal");
    }
}

#[tokio::test]
async fn migrate_adds_the_expires_at_indexes_to_a_database_migrated_without_them() {
    let db = store_support::sqlite().await;
    // a file migrated by an older version: version 7, no expires_at indexes
    db.raw.exec("DROP INDEX idx_routes_expires_at").await;
    db.raw.exec("DROP INDEX idx_tcp_routes_expires_at").await;
    for _ in 0..2 {
        db.store.migrate().await.unwrap();
        let n = db
            .raw
            .int(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name IN \
                 ('idx_routes_expires_at', 'idx_tcp_routes_expires_at')",
            )
            .await;
        assert_eq!(n, 2);
    }
    let store_support::Raw::Sqlite(raw) = &db.raw else {
        unreachable!("a SQLite test database")
    };
    let plan: Vec<String> =
        sqlx::query("EXPLAIN QUERY PLAN SELECT guid FROM tcp_routes WHERE expires_at < '2000'")
            .fetch_all(raw)
            .await
            .unwrap()
            .iter()
            .map(|r| sqlx::Row::get::<String, _>(r, "detail"))
            .collect();
    assert!(
        plan.iter().any(|d| d.contains("idx_tcp_routes_expires_at")),
        "{plan:?}"
    );
}
