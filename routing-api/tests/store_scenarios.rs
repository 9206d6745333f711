//! Store behaviour that every backend must share, run against a real MariaDB (`mysql::*`), a
//! real PostgreSQL (`postgres::*`) and a real SQLite file (`sqlite::*`).

mod store_support;

use std::collections::HashSet;
use std::time::Duration;

use routing_api::store::{StoreError, MIGRATION_KEY};
use routing_api_client::models::{RouterGroup, TcpRouteMapping};
use store_support::{http_route, router_group, tcp_mapping, TestDb, TTL};

/// Generates `mysql::<name>`, `postgres::<name>` and `sqlite::<name>` tests running
/// `scenarios::<name>`.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = crate::store_support::mysql().await;
                    crate::scenarios::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = crate::store_support::postgres().await;
                    crate::scenarios::$name(&db).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = crate::store_support::sqlite().await;
                    crate::scenarios::$name(&db).await;
                }
            )*
        }
    };
}

both_backends!(
    migrations_are_idempotent,
    router_group_crud,
    router_group_duplicate_name_is_a_distinct_error,
    router_groups_seeded_only_when_empty,
    router_group_backup_locks,
    http_route_crud,
    http_route_expiry_hides_and_prunes,
    tcp_route_crud_and_isolation_segments,
    tcp_identity_no_tls_no_sni_is_one_row,
    tcp_identity_with_tls_and_sni,
    tcp_route_expiry_hides_and_prunes,
    concurrent_tcp_upserts_leave_one_row,
    concurrent_http_upserts_leave_one_row,
    concurrent_seeding_seeds_once,
    concurrent_router_group_creates_commit_at_most_one_of_overlapping_groups,
    concurrent_router_group_updates_commit_at_most_one_of_overlapping_ports,
    a_refused_router_group_write_commits_nothing,
    batch_upsert_gives_each_entry_its_state_as_of_its_own_write,
    batch_upsert_over_several_chunks_keeps_every_distinct_mapping,
    batch_delete_removes_every_listed_route_in_one_call,
);

/// A check forbidding two groups to share a port: stricter than upstream's (which lets groups
/// share ports), so that concurrent writes have something to race on.
fn no_shared_ports(groups: &[RouterGroup]) -> Result<(), String> {
    let mut ranges = Vec::new();
    for g in groups {
        for item in g.reservable_ports.split(',') {
            let r = routing_api_client::ports::parse_port_range(item).map_err(|e| e.to_string())?;
            ranges.push(r);
        }
    }
    match routing_api_client::ports::first_overlap(&ranges) {
        Some((a, b)) => Err(format!("groups share ports: {a} and {b}")),
        None => Ok(()),
    }
}

/// Whether two of the stored groups share a port.
async fn stored_groups_overlap(db: &TestDb) -> bool {
    let groups = db.store.router_groups().await.unwrap();
    no_shared_ports(&groups).is_err()
}

mod scenarios {
    use super::*;

    /// Long enough for `expires_at = now` to be older than `now - 1s`, even where MySQL rounds
    /// DATETIME up to the next second.
    const EXPIRED_FOR_MORE_THAN_A_SECOND: Duration = Duration::from_millis(1600);

    pub async fn migrations_are_idempotent(db: &TestDb) {
        // already migrated once by the fixture
        db.store.migrate().await.expect("second migrate");
        db.store.migrate().await.expect("third migrate");
        assert_eq!(db.raw.count("migration_data").await, 1);
        let version = db
            .raw
            .int(&format!(
                "SELECT CAST(current_version AS SIGNED) FROM migration_data WHERE migration_key = '{MIGRATION_KEY}'"
            ))
            .await;
        assert_eq!(version, 7);
        let target = db
            .raw
            .int(&format!(
                "SELECT CAST(target_version AS SIGNED) FROM migration_data WHERE migration_key = '{MIGRATION_KEY}'"
            ))
            .await;
        assert_eq!(target, 7);
        // data survives a re-run
        db.store
            .upsert_http_route(&http_route("a.example.com", 8080), TTL)
            .await
            .unwrap();
        db.store.migrate().await.unwrap();
        assert_eq!(db.store.http_routes().await.unwrap().len(), 1);
    }

    pub async fn router_group_crud(db: &TestDb) {
        let s = &db.store;
        assert!(s.router_groups().await.unwrap().is_empty());
        let tcp = s
            .create_router_group(&router_group("default-tcp", "tcp", "1024-1033"))
            .await
            .unwrap();
        assert_eq!(tcp.guid.len(), 36, "v4 guid generated");
        let mut given = router_group("my-http-rg", "http", "");
        given.guid = "a5fb1ac8-d9e2-4b52-4043-93683d1798fe".into();
        let http = s.create_router_group(&given).await.unwrap();
        assert_eq!(http, given, "given guid kept");

        let all = s.router_groups().await.unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.contains(&tcp) && all.contains(&http));
        assert_eq!(
            s.router_group_by_name("default-tcp").await.unwrap(),
            Some(tcp.clone())
        );
        assert_eq!(s.router_group_by_name("nope").await.unwrap(), None);
        assert_eq!(
            s.router_group_by_guid(&http.guid).await.unwrap(),
            Some(http.clone())
        );
        assert_eq!(s.router_group_by_guid("nope").await.unwrap(), None);

        let updated = s
            .update_router_group_ports(&tcp.guid, "1024-1040")
            .await
            .unwrap();
        assert_eq!(updated.reservable_ports, "1024-1040");
        assert_eq!(
            (updated.guid.as_str(), updated.name.as_str()),
            (tcp.guid.as_str(), "default-tcp")
        );
        // same value again is fine
        s.update_router_group_ports(&tcp.guid, "1024-1040")
            .await
            .unwrap();
        assert_eq!(
            s.router_group_by_guid(&tcp.guid)
                .await
                .unwrap()
                .unwrap()
                .reservable_ports,
            "1024-1040"
        );
        match s.update_router_group_ports("missing", "2000").await {
            Err(StoreError::NotFound(_)) => {}
            other => panic!("expected NotFound, got {other:?}"),
        }

        assert!(s.delete_router_group(&http.guid).await.unwrap());
        assert!(!s.delete_router_group(&http.guid).await.unwrap());
        assert_eq!(s.router_groups().await.unwrap(), vec![updated]);
    }

    pub async fn router_group_duplicate_name_is_a_distinct_error(db: &TestDb) {
        let s = &db.store;
        s.create_router_group(&router_group("default-tcp", "tcp", "1024-1033"))
            .await
            .unwrap();
        match s
            .create_router_group(&router_group("default-tcp", "tcp", "2000-2010"))
            .await
        {
            Err(StoreError::Duplicate(msg)) => assert!(msg.contains("default-tcp"), "{msg}"),
            other => panic!("expected Duplicate, got {other:?}"),
        }
        let err = s
            .create_router_group(&router_group("default-tcp", "http", ""))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Duplicate(_)));
        assert!(!err.is_unavailable());
        assert_eq!(db.raw.count("router_groups").await, 1);
        // the first group is untouched
        let g = s
            .router_group_by_name("default-tcp")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g.reservable_ports, "1024-1033");
    }

    pub async fn router_groups_seeded_only_when_empty(db: &TestDb) {
        let s = &db.store;
        let seeds = vec![
            router_group("default-tcp", "tcp", "1024-1033"),
            router_group("other-tcp", "tcp", "2000"),
        ];
        assert_eq!(s.seed_router_groups(&seeds).await.unwrap(), 2);
        let groups = s.router_groups().await.unwrap();
        assert_eq!(groups.len(), 2);
        assert!(groups.iter().all(|g| g.guid.len() == 36));
        // not empty any more: nothing happens, even for new names
        assert_eq!(
            s.seed_router_groups(&[router_group("third", "tcp", "3000")])
                .await
                .unwrap(),
            0
        );
        assert_eq!(s.seed_router_groups(&seeds).await.unwrap(), 0);
        assert_eq!(s.router_groups().await.unwrap(), groups);
        assert_eq!(s.seed_router_groups(&[]).await.unwrap(), 0);
    }

    pub async fn router_group_backup_locks(db: &TestDb) {
        let s = &db.store;
        let g = s
            .create_router_group(&router_group("default-tcp", "tcp", "1024-1033"))
            .await
            .unwrap();
        s.set_router_group_reads_locked(true);
        let err = s.router_groups().await.unwrap_err();
        assert!(matches!(err, StoreError::BackupLocked) && err.is_unavailable());
        assert_eq!(
            err.to_string(),
            "Database unavailable due to backup or restore"
        );
        // tcp routes are still served
        s.tcp_routes(&[]).await.unwrap();
        s.set_router_group_reads_locked(false);
        s.set_router_group_writes_locked(true);
        assert!(s.router_groups().await.is_ok());
        assert!(matches!(
            s.delete_router_group(&g.guid).await,
            Err(StoreError::BackupLocked)
        ));
        s.set_router_group_writes_locked(false);
        assert!(s.delete_router_group(&g.guid).await.unwrap());
    }

    pub async fn http_route_crud(db: &TestDb) {
        let s = &db.store;
        let r = http_route("myapp.example.com", 9001);
        let (stored, created) = s
            .upsert_http_route(&r, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(created);
        assert_eq!(stored.ttl, Some(60));
        assert_eq!(stored.log_guid, "log-guid");
        assert_eq!(stored.modification_tag.index, 0);
        assert_eq!(stored.modification_tag.guid.len(), 36);
        let tag_guid = stored.modification_tag.guid.clone();

        // refresh: same identity, new ttl, empty log_guid keeps the old one
        let mut again = r.clone();
        again.log_guid = String::new();
        let (stored2, created) = s
            .upsert_http_route(&again, Duration::from_secs(90))
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(stored2.modification_tag.guid, tag_guid);
        assert_eq!(stored2.modification_tag.index, 1);
        assert_eq!(stored2.ttl, Some(90));
        assert_eq!(stored2.log_guid, "log-guid");
        // non-empty log_guid replaces it
        again.log_guid = "new-log".into();
        let (stored3, _) = s.upsert_http_route(&again, TTL).await.unwrap();
        assert_eq!(
            (stored3.log_guid.as_str(), stored3.modification_tag.index),
            ("new-log", 2)
        );

        // a different route service URL is a different route
        let mut rs = r.clone();
        rs.route_service_url = "https://rs.example.com".into();
        let (rs_stored, created) = s.upsert_http_route(&rs, TTL).await.unwrap();
        assert!(created);
        assert_eq!(rs_stored.route_service_url, "https://rs.example.com");
        // so is a different port or ip
        assert!(
            s.upsert_http_route(&http_route("myapp.example.com", 9002), TTL)
                .await
                .unwrap()
                .1
        );
        let mut other_ip = r.clone();
        other_ip.ip = "10.0.0.9".into();
        assert!(s.upsert_http_route(&other_ip, TTL).await.unwrap().1);

        let list = s.http_routes().await.unwrap();
        assert_eq!(list.len(), 4);
        assert!(list.contains(&stored3));
        assert!(list.contains(&rs_stored));
        assert_eq!(db.raw.count("routes").await, 4);

        // delete returns the stored row; the incoming ttl / log_guid / tag do not matter
        let mut del = r.clone();
        del.ttl = None;
        del.log_guid = "whatever".into();
        let deleted = s.delete_http_route(&del).await.unwrap();
        assert_eq!(deleted, Some(stored3));
        assert_eq!(s.delete_http_route(&del).await.unwrap(), None);
        assert_eq!(s.delete_http_route(&rs).await.unwrap(), Some(rs_stored));
        assert_eq!(s.http_routes().await.unwrap().len(), 2);
        assert_eq!(db.raw.count("routes").await, 2);
    }

    pub async fn http_route_expiry_hides_and_prunes(db: &TestDb) {
        let s = &db.store;
        let live = http_route("live.example.com", 8080);
        let dying = http_route("dying.example.com", 8080);
        s.upsert_http_route(&live, TTL).await.unwrap();
        // ttl 0: expires_at = now, hidden at once
        let (dying_stored, _) = s.upsert_http_route(&dying, Duration::ZERO).await.unwrap();
        let list = s.http_routes().await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].route, "live.example.com");
        assert_eq!(db.raw.count("routes").await, 2, "hidden, not deleted");
        // a row as upstream would have left it, long expired
        db.raw
            .exec(
                "INSERT INTO routes (guid, created_at, updated_at, expires_at, route, port, ip, ttl, \
                 log_guid, route_service_url, modification_guid, modification_index) VALUES \
                 ('old-guid', '2020-01-01 00:00:00', '2020-01-01 00:00:00', '2020-01-01 00:02:00', \
                 'old.example.com', 80, '10.0.0.3', 120, 'lg', '', 'mg', 3)",
            )
            .await;
        // prune only takes rows expired for more than a second
        let (http, tcp) = s.prune_expired().await.unwrap();
        assert!(tcp.is_empty());
        assert_eq!(http.len(), 1, "{http:?}");
        assert_eq!(http[0].route, "old.example.com");
        assert_eq!(http[0].modification_tag.index, 3);
        assert_eq!(http[0].ttl, Some(120));
        tokio::time::sleep(EXPIRED_FOR_MORE_THAN_A_SECOND).await;
        let (http, _) = s.prune_expired().await.unwrap();
        assert_eq!(http, vec![dying_stored]);
        assert_eq!(s.prune_expired().await.unwrap().0, vec![]);
        assert_eq!(db.raw.count("routes").await, 1);
        assert_eq!(s.http_routes().await.unwrap().len(), 1);
        // a pruned route comes back as new
        let (_, created) = s.upsert_http_route(&dying, TTL).await.unwrap();
        assert!(created);
    }

    pub async fn tcp_route_crud_and_isolation_segments(db: &TestDb) {
        let s = &db.store;
        let m = tcp_mapping("rg-1", 1025, 9001);
        let (stored, created) = s.upsert_tcp_route(&m, TTL).await.unwrap();
        assert!(created);
        assert_eq!(stored.backend_tls_port, 0);
        assert_eq!(stored.backend_sni_hostname, None);
        assert_eq!(stored.ttl, Some(60));
        assert_eq!(stored.instance_id, "inst-1");
        assert_eq!(stored.modification_tag.index, 0);
        assert_eq!(
            serde_json::to_string(&stored).unwrap(),
            format!(
                r#"{{"router_group_guid":"rg-1","backend_port":9001,"backend_tls_port":0,"backend_ip":"10.0.0.2","instance_id":"inst-1","port":1025,"modification_tag":{{"guid":"{}","index":0}},"ttl":60,"isolation_segment":""}}"#,
                stored.modification_tag.guid
            )
        );

        // second backend on the same external port, no instance id, in a segment
        let mut m2 = tcp_mapping("rg-1", 1025, 9002);
        m2.instance_id = String::new();
        m2.isolation_segment = "is1".into();
        let (stored2, created) = s.upsert_tcp_route(&m2, TTL).await.unwrap();
        assert!(created);
        assert_eq!(stored2.instance_id, "");

        // update overwrites isolation segment and instance id, bumps the index, keeps the tag guid
        let mut m_upd = m.clone();
        m_upd.isolation_segment = "is2".into();
        m_upd.instance_id = "inst-2".into();
        let (upd, created) = s
            .upsert_tcp_route(&m_upd, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(upd.modification_tag.guid, stored.modification_tag.guid);
        assert_eq!(upd.modification_tag.index, 1);
        assert_eq!(upd.ttl, Some(30));
        assert_eq!(
            (upd.isolation_segment.as_str(), upd.instance_id.as_str()),
            ("is2", "inst-2")
        );

        let mut m3 = tcp_mapping("rg-2", 1026, 9003);
        m3.isolation_segment = String::new();
        let (stored3, _) = s.upsert_tcp_route(&m3, TTL).await.unwrap();

        let all = s.tcp_routes(&[]).await.unwrap();
        assert_eq!(all.len(), 3);
        let seg = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            s.tcp_routes(&seg(&["is1"])).await.unwrap(),
            vec![stored2.clone()]
        );
        assert_eq!(
            s.tcp_routes(&seg(&["is2"])).await.unwrap(),
            vec![upd.clone()]
        );
        assert_eq!(
            s.tcp_routes(&seg(&[""])).await.unwrap(),
            vec![stored3.clone()]
        );
        let mut two = s.tcp_routes(&seg(&["is1", ""])).await.unwrap();
        two.sort_by_key(|m| m.backend_port);
        assert_eq!(two, vec![stored2.clone(), stored3.clone()]);
        assert!(s.tcp_routes(&seg(&["nope"])).await.unwrap().is_empty());

        // delete: identity only (ttl, instance id, segment ignored)
        let mut del = m.clone();
        del.ttl = None;
        del.instance_id = "other".into();
        assert_eq!(s.delete_tcp_route(&del).await.unwrap(), Some(upd));
        assert_eq!(s.delete_tcp_route(&del).await.unwrap(), None);
        // a different router group, port or backend is a different mapping
        assert_eq!(
            s.delete_tcp_route(&tcp_mapping("rg-2", 1025, 9002))
                .await
                .unwrap(),
            None
        );
        assert_eq!(s.delete_tcp_route(&m2).await.unwrap(), Some(stored2));
        assert_eq!(s.tcp_routes(&[]).await.unwrap(), vec![stored3]);
        assert_eq!(db.raw.count("tcp_routes").await, 1);
    }

    fn variant(tls: Option<i32>, sni: Option<&str>) -> TcpRouteMapping {
        let mut m = tcp_mapping("rg-1", 1025, 9001);
        m.backend_tls_port = tls.unwrap_or_default();
        m.backend_sni_hostname = sni.map(str::to_owned);
        m
    }

    pub async fn tcp_identity_no_tls_no_sni_is_one_row(db: &TestDb) {
        let s = &db.store;
        // 0 / -1 / absent TLS port and "" / absent SNI are all the same mapping
        let variants = [
            variant(Some(0), Some("")),
            variant(None, None),
            variant(Some(-1), None),
            variant(Some(0), None),
            variant(Some(-1), Some("")),
        ];
        let (first, created) = s.upsert_tcp_route(&variants[0], TTL).await.unwrap();
        assert!(created);
        for (i, v) in variants.iter().enumerate().skip(1) {
            let (stored, created) = s.upsert_tcp_route(v, TTL).await.unwrap();
            assert!(!created, "variant {i} must update in place");
            assert_eq!(stored.modification_tag.guid, first.modification_tag.guid);
            assert_eq!(stored.modification_tag.index as usize, i);
            assert_eq!(stored.backend_tls_port, 0);
            assert_eq!(stored.backend_sni_hostname, None);
        }
        assert_eq!(db.raw.count("tcp_routes").await, 1);
        assert_eq!(s.tcp_routes(&[]).await.unwrap().len(), 1);
        // stored canonically: NULL, NULL
        assert_eq!(
            db.raw
                .int("SELECT COUNT(*) FROM tcp_routes WHERE host_tls_port IS NULL AND sni_hostname IS NULL")
                .await,
            1
        );
        // the JSON has backend_tls_port 0 and no backend_sni_hostname
        let json = serde_json::to_string(&s.tcp_routes(&[]).await.unwrap()[0]).unwrap();
        assert!(
            json.contains(r#""backend_tls_port":0"#) && !json.contains("sni"),
            "{json}"
        );

        // create twice + delete (with yet another spelling) -> zero rows
        let deleted = s
            .delete_tcp_route(&variant(Some(-1), Some("")))
            .await
            .unwrap();
        assert!(deleted.is_some());
        assert_eq!(db.raw.count("tcp_routes").await, 0);
        s.upsert_tcp_route(&variant(Some(0), None), TTL)
            .await
            .unwrap();
        s.upsert_tcp_route(&variant(None, Some("")), TTL)
            .await
            .unwrap();
        assert_eq!(db.raw.count("tcp_routes").await, 1);
        assert!(s
            .delete_tcp_route(&variant(Some(0), None))
            .await
            .unwrap()
            .is_some());
        assert_eq!(db.raw.count("tcp_routes").await, 0);
        assert!(s.tcp_routes(&[]).await.unwrap().is_empty());
    }

    pub async fn tcp_identity_with_tls_and_sni(db: &TestDb) {
        let s = &db.store;
        let plain = variant(None, None);
        let tls = variant(Some(60001), None);
        let sni = variant(None, Some("sni.example.com"));
        let both = variant(Some(60001), Some("sni.example.com"));
        let other_sni = variant(Some(60001), Some("other.example.com"));
        for m in [&plain, &tls, &sni, &both, &other_sni] {
            let (stored, created) = s.upsert_tcp_route(m, TTL).await.unwrap();
            assert!(created, "{m:?} is its own mapping");
            assert_eq!(stored.backend_tls_port, m.backend_tls_port.max(0));
            assert_eq!(stored.backend_sni_hostname, m.backend_sni_hostname);
        }
        for m in [&plain, &tls, &sni, &both, &other_sni] {
            let (stored, created) = s.upsert_tcp_route(m, TTL).await.unwrap();
            assert!(!created);
            assert_eq!(stored.modification_tag.index, 1);
        }
        assert_eq!(db.raw.count("tcp_routes").await, 5);
        let listed = s.tcp_routes(&[]).await.unwrap();
        let json: HashSet<String> = listed
            .iter()
            .map(|m| serde_json::to_string(m).unwrap())
            .collect();
        assert!(json
            .iter()
            .any(|j| j.contains(r#""backend_tls_port":60001,"backend_ip":"10.0.0.2","backend_sni_hostname":"sni.example.com""#)));
        // deleting the TLS+SNI one leaves the others
        assert!(s.delete_tcp_route(&both).await.unwrap().is_some());
        assert!(s.delete_tcp_route(&both).await.unwrap().is_none());
        assert_eq!(db.raw.count("tcp_routes").await, 4);
        for m in [&plain, &tls, &sni, &other_sni] {
            assert!(s.delete_tcp_route(m).await.unwrap().is_some(), "{m:?}");
        }
        assert_eq!(db.raw.count("tcp_routes").await, 0);
    }

    pub async fn tcp_route_expiry_hides_and_prunes(db: &TestDb) {
        let s = &db.store;
        let live = tcp_mapping("rg-1", 1025, 9001);
        let dying = tcp_mapping("rg-1", 1025, 9002);
        let refreshed = tcp_mapping("rg-1", 1025, 9003);
        s.upsert_tcp_route(&live, TTL).await.unwrap();
        let (dying_stored, _) = s.upsert_tcp_route(&dying, Duration::ZERO).await.unwrap();
        s.upsert_tcp_route(&refreshed, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(s.tcp_routes(&[]).await.unwrap().len(), 1);
        assert_eq!(s.tcp_routes(&["".to_owned()]).await.unwrap().len(), 1);
        assert_eq!(db.raw.count("tcp_routes").await, 3, "hidden, not deleted");
        tokio::time::sleep(EXPIRED_FOR_MORE_THAN_A_SECOND).await;
        // a refresh before the pruner runs brings an expired mapping back
        let (back, created) = s.upsert_tcp_route(&refreshed, TTL).await.unwrap();
        assert!(!created);
        assert_eq!(back.modification_tag.index, 1);
        let (http, tcp) = s.prune_expired().await.unwrap();
        assert!(http.is_empty());
        assert_eq!(tcp, vec![dying_stored]);
        assert_eq!(db.raw.count("tcp_routes").await, 2);
        assert_eq!(s.tcp_routes(&[]).await.unwrap().len(), 2);
        assert_eq!(s.prune_expired().await.unwrap(), (vec![], vec![]));
    }

    pub async fn concurrent_tcp_upserts_leave_one_row(db: &TestDb) {
        // 20 concurrent upserts of each of two mappings: without TLS/SNI (NULLs in the unique
        // index) and with both set
        for m in [
            variant(None, None),
            variant(Some(60001), Some("sni.example.com")),
        ] {
            let tasks: Vec<_> = (0..20)
                .map(|i| {
                    let store = db.store.clone();
                    let mut m = m.clone();
                    // alternate the spellings of "no TLS port" / "no SNI"
                    if m.backend_tls_port == 0 && i % 2 == 1 {
                        m.backend_tls_port = -1;
                        m.backend_sni_hostname = Some(String::new());
                    }
                    tokio::spawn(async move { store.upsert_tcp_route(&m, TTL).await })
                })
                .collect();
            let mut created = 0;
            let mut indexes = Vec::new();
            for t in tasks {
                let (stored, c) = t.await.unwrap().expect("upsert");
                created += usize::from(c);
                indexes.push(stored.modification_tag.index);
            }
            assert_eq!(created, 1, "exactly one upsert creates");
            indexes.sort_unstable();
            assert_eq!(
                indexes,
                (0..20).collect::<Vec<u32>>(),
                "each upsert saw its own update"
            );
        }
        assert_eq!(db.raw.count("tcp_routes").await, 2);
        let listed = s_sorted(db).await;
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|m| m.modification_tag.index == 19));
    }

    pub async fn concurrent_router_group_creates_commit_at_most_one_of_overlapping_groups(
        db: &TestDb,
    ) {
        let tasks: Vec<_> = (0..12u16)
            .map(|i| {
                let store = db.store.clone();
                // every group overlaps every other one at 5000
                let g = router_group(&format!("g{i}"), "tcp", &format!("{}-5000", 4000 + i));
                tokio::spawn(async move {
                    store
                        .create_router_group_checked(&g, &no_shared_ports)
                        .await
                })
            })
            .collect();
        let mut committed = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => committed += 1,
                Err(StoreError::Rejected(m)) => assert!(m.contains("share ports"), "{m}"),
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(
            committed, 1,
            "exactly one of the overlapping creates commits"
        );
        assert_eq!(db.raw.count("router_groups").await, 1);
        assert!(!stored_groups_overlap(db).await);
    }

    pub async fn concurrent_router_group_updates_commit_at_most_one_of_overlapping_ports(
        db: &TestDb,
    ) {
        let mut guids = Vec::new();
        for i in 0..8u16 {
            let g = router_group(&format!("u{i}"), "tcp", &(2000 + i).to_string());
            guids.push(db.store.create_router_group(&g).await.unwrap().guid);
        }
        let tasks: Vec<_> = guids
            .iter()
            .enumerate()
            .map(|(i, guid)| {
                let store = db.store.clone();
                let guid = guid.clone();
                // all new lists overlap at 6000
                let ports = format!("{}-6000", 5000 + i);
                tokio::spawn(async move {
                    store
                        .update_router_group_ports_checked(&guid, &ports, &no_shared_ports)
                        .await
                })
            })
            .collect();
        let mut committed = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(g) => {
                    committed += 1;
                    assert!(g.reservable_ports.ends_with("-6000"));
                }
                Err(StoreError::Rejected(_)) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(
            committed, 1,
            "exactly one of the overlapping updates commits"
        );
        assert!(!stored_groups_overlap(db).await);
    }

    pub async fn a_refused_router_group_write_commits_nothing(db: &TestDb) {
        let s = &db.store;
        let a = s
            .create_router_group(&router_group("a", "tcp", "3000-3010"))
            .await
            .unwrap();
        let refused = s
            .create_router_group_checked(&router_group("b", "tcp", "3005"), &no_shared_ports)
            .await;
        assert!(
            matches!(refused, Err(StoreError::Rejected(_))),
            "{refused:?}"
        );
        let refused = s
            .update_router_group_ports_checked(&a.guid, "1", &|_| Err("no".to_owned()))
            .await;
        assert!(matches!(refused, Err(StoreError::Rejected(m)) if m == "no"));
        let groups = s.router_groups().await.unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].reservable_ports, "3000-3010");
        // the check sees the group as it would be committed
        let seen = std::sync::Mutex::new(Vec::new());
        s.update_router_group_ports_checked(&a.guid, "4000", &|all| {
            seen.lock()
                .unwrap()
                .extend(all.iter().map(|g| g.reservable_ports.clone()));
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(*seen.lock().unwrap(), vec!["4000".to_owned()]);
    }

    pub async fn batch_upsert_gives_each_entry_its_state_as_of_its_own_write(db: &TestDb) {
        let s = &db.store;
        let rg = s
            .create_router_group(&router_group("batch", "tcp", "1024-1100"))
            .await
            .unwrap()
            .guid;
        let a = tcp_mapping(&rg, 1024, 8000);
        let (before, _) = s.upsert_tcp_route(&a, TTL).await.unwrap();
        let mut b = tcp_mapping(&rg, 1025, 8001);
        b.backend_tls_port = 9443;
        b.backend_sni_hostname = Some("b.example.com".into());
        b.isolation_segment = "is1".into();
        let mut a2 = a.clone();
        a2.instance_id = "inst-2".into();
        a2.backend_tls_port = -1; // upstream's "no TLS port": the same mapping
        let ttl2 = Duration::from_secs(90);
        let batch = vec![(a.clone(), TTL), (b.clone(), TTL), (a2.clone(), ttl2)];
        let done = s.upsert_tcp_routes(&batch).await.unwrap();
        let summary: Vec<(u16, u32, bool)> = done
            .iter()
            .map(|(m, c)| (m.port, m.modification_tag.index, *c))
            .collect();
        assert_eq!(
            summary,
            vec![(1024, 1, false), (1025, 0, true), (1024, 2, false)]
        );
        assert_eq!(
            done[0].0.modification_tag.guid,
            before.modification_tag.guid
        );
        assert_eq!(done[2].0.instance_id, "inst-2");
        assert_eq!(done[2].0.ttl, Some(90));
        assert_eq!(done[2].0.backend_tls_port, 0);
        // what the batch reports is what the table holds
        let mut listed = s.tcp_routes(&[]).await.unwrap();
        listed.sort_by_key(|m| m.port);
        assert_eq!(listed, vec![done[2].0.clone(), done[1].0.clone()]);
        assert_eq!(db.raw.count("tcp_routes").await, 2);

        let r1 = http_route("one.example.com", 8080);
        let mut r1b = r1.clone();
        r1b.log_guid = String::new(); // keeps the stored log_guid
        let r2 = http_route("two.example.com", 8080);
        let done = s
            .upsert_http_routes(&[(r1.clone(), TTL), (r2.clone(), TTL), (r1b, TTL)])
            .await
            .unwrap();
        let summary: Vec<(&str, u32, bool)> = done
            .iter()
            .map(|(r, c)| (r.route.as_str(), r.modification_tag.index, *c))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("one.example.com", 0, true),
                ("two.example.com", 0, true),
                ("one.example.com", 1, false)
            ]
        );
        assert_eq!(done[2].0.log_guid, "log-guid");
        assert_eq!(db.raw.count("routes").await, 2);
    }

    /// A batch longer than one chunk (MySQL writes 500 rows a statement) whose later mapping
    /// shares the router group, backend address and port of an earlier one but differs in its
    /// TLS port and SNI: two identities, two rows. MySQL used to take the earlier chunk's row
    /// for a leftover copy and delete it while reporting it created.
    pub async fn batch_upsert_over_several_chunks_keeps_every_distinct_mapping(db: &TestDb) {
        let s = &db.store;
        let mut batch: Vec<(TcpRouteMapping, Duration)> = (0..500)
            .map(|i| (tcp_mapping("rg", 1024 + (i % 50), 8000 + i), TTL))
            .collect();
        let mut tls = batch[0].0.clone();
        tls.backend_tls_port = 9443;
        tls.backend_sni_hostname = Some("tls.example.com".into());
        batch.push((tls, TTL));
        let done = s.upsert_tcp_routes(&batch).await.unwrap();
        assert_eq!(done.len(), 501);
        assert!(done.iter().all(|(_, created)| *created));
        assert_eq!(db.raw.count("tcp_routes").await, 501);
        let listed = s.tcp_routes(&[]).await.unwrap();
        let first = &batch[0].0;
        let plain = listed
            .iter()
            .filter(|m| m.port == first.port && m.backend_port == first.backend_port);
        assert_eq!(
            plain.map(|m| m.backend_tls_port).collect::<HashSet<_>>(),
            HashSet::from([0, 9443]),
            "both the plain and the TLS mapping of {}:{} are listed",
            first.backend_ip,
            first.backend_port
        );
    }

    pub async fn batch_delete_removes_every_listed_route_in_one_call(db: &TestDb) {
        let s = &db.store;
        let maps: Vec<TcpRouteMapping> = (0..5).map(|i| tcp_mapping("rg", 1024 + i, 80)).collect();
        let batch: Vec<_> = maps.iter().map(|m| (m.clone(), TTL)).collect();
        s.upsert_tcp_routes(&batch).await.unwrap();
        let mut gone = maps[..3].to_vec();
        gone.push(tcp_mapping("rg", 2000, 80)); // never stored
        let deleted = s.delete_tcp_routes(&gone).await.unwrap();
        assert_eq!(deleted.iter().filter(|d| d.is_some()).count(), 3);
        assert!(deleted[3].is_none());
        assert_eq!(db.raw.count("tcp_routes").await, 2);

        let routes: Vec<_> = (0..3)
            .map(|i| http_route(&format!("r{i}.example.com"), 80))
            .collect();
        let batch: Vec<_> = routes.iter().map(|r| (r.clone(), TTL)).collect();
        s.upsert_http_routes(&batch).await.unwrap();
        let deleted = s.delete_http_routes(&routes[1..]).await.unwrap();
        assert!(deleted.iter().all(Option::is_some));
        assert_eq!(db.raw.count("routes").await, 1);
    }

    async fn s_sorted(db: &TestDb) -> Vec<TcpRouteMapping> {
        let mut v = db.store.tcp_routes(&[]).await.unwrap();
        v.sort_by_key(|m| m.backend_tls_port);
        v
    }

    pub async fn concurrent_http_upserts_leave_one_row(db: &TestDb) {
        let r = http_route("race.example.com", 8080);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = db.store.clone();
                let r = r.clone();
                tokio::spawn(async move { store.upsert_http_route(&r, TTL).await })
            })
            .collect();
        let mut created = 0;
        for t in tasks {
            created += usize::from(t.await.unwrap().expect("upsert").1);
        }
        assert_eq!(created, 1);
        assert_eq!(db.raw.count("routes").await, 1);
        let routes = db.store.http_routes().await.unwrap();
        assert_eq!(routes[0].modification_tag.index, 19);
    }

    pub async fn concurrent_seeding_seeds_once(db: &TestDb) {
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let store = db.store.clone();
                tokio::spawn(async move {
                    store
                        .seed_router_groups(&[
                            router_group(&format!("seed-{i}"), "tcp", "1024-1033"),
                            router_group(&format!("seed-{i}-b"), "tcp", "2000"),
                        ])
                        .await
                })
            })
            .collect();
        let mut inserted = 0;
        for t in tasks {
            inserted += t.await.unwrap().expect("seed");
        }
        assert_eq!(inserted, 2);
        assert_eq!(db.raw.count("router_groups").await, 2);
    }
}
