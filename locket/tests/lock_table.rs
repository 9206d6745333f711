//! `LockTable` semantics on real SQLite files, a real MariaDB (DATABASE_URL, default
//! mysql://root@127.0.0.1:3306) and a real PostgreSQL (POSTGRES_URL, default
//! postgres://postgres@127.0.0.1:5432/test); each MariaDB / PostgreSQL test creates and drops its
//! own database.

mod common;

use std::time::Duration;

use common::{MariaDb, Postgres};
use locket::runner::{hold_lock, LockRunnerConfig, LockState};
use locket::sql::LockTable;
use locket::{LockError, Resource};

/// The full Locket semantics on one table; `other` is a second connection pool on the same
/// database (a second "process").
async fn semantics(table: &LockTable, other: &LockTable) {
    // Insert.
    let r1 = table
        .lock(&Resource::lock("k1", "owner-a"), 15)
        .await
        .unwrap();
    assert_eq!(r1.modified_index, 1);
    assert_eq!(r1.modified_id.len(), 36, "a GUID");
    assert_eq!((r1.ttl, r1.lock_type.as_str()), (15, "lock"));

    // Refresh by the same owner, seen from the other process.
    let mut refreshed = Resource::lock("k1", "owner-a");
    refreshed.value = "v2".into();
    let r2 = other.lock(&refreshed, 30).await.unwrap();
    assert_eq!(r2.modified_index, 2);
    assert_eq!(r2.modified_id, r1.modified_id);
    let f = table.fetch("k1").await.unwrap();
    assert_eq!(
        (
            f.owner.as_str(),
            f.value.as_str(),
            f.ttl,
            f.modified_index,
            f.modified_id.as_str()
        ),
        ("owner-a", "v2", 30, 2, r1.modified_id.as_str())
    );

    // Collision.
    assert_eq!(
        other.lock(&Resource::lock("k1", "owner-b"), 15).await,
        Err(LockError::Collision)
    );
    // Validation.
    assert_eq!(
        table.lock(&Resource::lock("k1", "owner-a"), 0).await,
        Err(LockError::InvalidTtl)
    );
    assert_eq!(
        table.lock(&Resource::lock("k1", ""), 15).await,
        Err(LockError::InvalidOwner)
    );

    // Fetch missing.
    assert_eq!(table.fetch("nope").await, Err(LockError::NotFound));

    // FetchAll with type filter.
    table
        .lock(&Resource::presence("cell-1", "cell-1", "{\"rep\":1}"), 15)
        .await
        .unwrap();
    let all = table.fetch_all("").await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        vec!["cell-1", "k1"]
    );
    let presences = table.fetch_all("presence").await.unwrap();
    assert_eq!(presences.len(), 1);
    assert_eq!(presences[0].value, "{\"rep\":1}");
    assert_eq!(table.fetch_all("lock").await.unwrap()[0].key, "k1");

    // Release.
    assert_eq!(
        table.release("k1", "owner-b").await,
        Err(LockError::Collision)
    );
    assert_eq!(table.release("missing", "anyone").await, Ok(()));
    table.release("k1", "owner-a").await.unwrap();
    assert_eq!(table.fetch("k1").await, Err(LockError::NotFound));
    // A new lock after release gets a new GUID and index 1.
    let r3 = other
        .lock(&Resource::lock("k1", "owner-b"), 15)
        .await
        .unwrap();
    assert_eq!(r3.modified_index, 1);
    assert_ne!(r3.modified_id, r1.modified_id);

    // Expire only if unchanged.
    assert!(!table
        .expire_if_unchanged("k1", "owner-b", &r3.modified_id, 0)
        .await
        .unwrap());
    assert!(!table
        .expire_if_unchanged("k1", "owner-a", &r3.modified_id, 1)
        .await
        .unwrap());
    assert!(!table
        .expire_if_unchanged("k1", "owner-b", "other-id", 1)
        .await
        .unwrap());
    other
        .lock(&Resource::lock("k1", "owner-b"), 15)
        .await
        .unwrap();
    assert!(
        !table
            .expire_if_unchanged("k1", "owner-b", &r3.modified_id, 1)
            .await
            .unwrap(),
        "refreshed since"
    );
    assert!(table
        .expire_if_unchanged("k1", "owner-b", &r3.modified_id, 2)
        .await
        .unwrap());
    assert_eq!(table.fetch("k1").await, Err(LockError::NotFound));
    assert!(!table
        .expire_if_unchanged("k1", "owner-b", &r3.modified_id, 2)
        .await
        .unwrap());

    table.health_check().await.unwrap();
}

/// Two pools race for the same fresh keys: exactly one wins each time.
async fn race(a: &LockTable, b: &LockTable) {
    for i in 0..25 {
        let key = format!("race-{i}");
        let ra = Resource::lock(key.clone(), "process-a");
        let rb = Resource::lock(key.clone(), "process-b");
        let (x, y) = tokio::join!(a.lock(&ra, 15), b.lock(&rb, 15));
        let wins = [x.is_ok(), y.is_ok()];
        assert_eq!(
            wins.iter().filter(|w| **w).count(),
            1,
            "exactly one winner for {key}: {x:?} {y:?}"
        );
        let loser = if x.is_ok() { &y } else { &x };
        assert_eq!(loser, &Err(LockError::Collision), "{key}");
        let winner = if x.is_ok() { "process-a" } else { "process-b" };
        assert_eq!(a.fetch(&key).await.unwrap().owner, winner);
    }
}

/// Active/standby through the table alone (the routing API without Locket): the standby takes
/// over once the active stops refreshing and the lock expires via the expirer.
async fn takeover(a: LockTable, b: LockTable) {
    let _expiry_a = locket::expiry::spawn_with_interval(a.clone(), Duration::from_millis(500));
    let _expiry_b = locket::expiry::spawn_with_interval(b.clone(), Duration::from_millis(500));
    let cfg = |owner: &str| {
        LockRunnerConfig::lock("routing_api_lock", owner)
            .with_ttl(Duration::from_secs(1))
            .with_retry_interval(Duration::from_millis(200))
    };
    let mut first = hold_lock(a.clone(), cfg("instance-a"));
    // Deadlines are slack for a loaded machine; the ttl (1 s) is the behaviour.
    tokio::time::timeout(Duration::from_secs(30), first.acquired())
        .await
        .expect("first acquires")
        .unwrap();
    let second = hold_lock(b.clone(), cfg("instance-b"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(second.state(), LockState::Acquiring, "refreshed lock kept");
    assert_eq!(
        a.fetch("routing_api_lock").await.unwrap().owner,
        "instance-a"
    );
    // Clean stop: released at once, the standby takes over quickly.
    first.release().await.unwrap();
    let mut second = second;
    tokio::time::timeout(Duration::from_secs(30), second.acquired())
        .await
        .expect("standby takes over")
        .unwrap();
    assert_eq!(
        b.fetch("routing_api_lock").await.unwrap().owner,
        "instance-b"
    );
    second.release().await.unwrap();
    assert_eq!(a.fetch("routing_api_lock").await, Err(LockError::NotFound));

    // An abandoned lock (holder died without releasing) expires after its ttl.
    a.lock(&Resource::lock("routing_api_lock", "dead-instance"), 1)
        .await
        .unwrap();
    let mut third = hold_lock(b.clone(), cfg("instance-c"));
    tokio::time::timeout(Duration::from_secs(30), third.acquired())
        .await
        .expect("abandoned lock expires and is taken over")
        .unwrap();
    third.release().await.unwrap();
}

#[tokio::test]
async fn sqlite_lock_semantics() {
    let (table, dir) = common::sqlite_table().await;
    let other = LockTable::connect_url(&common::sqlite_url(&dir))
        .await
        .unwrap();
    semantics(&table, &other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_pools_race() {
    let (table, dir) = common::sqlite_table().await;
    let other = LockTable::connect_url(&common::sqlite_url(&dir))
        .await
        .unwrap();
    race(&table, &other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_active_standby_takeover() {
    let (table, dir) = common::sqlite_table().await;
    let other = LockTable::connect_url(&common::sqlite_url(&dir))
        .await
        .unwrap();
    takeover(table, other).await;
}

#[tokio::test]
async fn sqlite_in_memory_and_bare_path() {
    let mem = LockTable::connect_url("sqlite::memory:").await.unwrap();
    mem.lock(&Resource::lock("k", "o"), 5).await.unwrap();
    assert_eq!(mem.fetch("k").await.unwrap().owner, "o");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bare.db");
    let opts =
        locket::sql::DbConnectOptions::for_driver("sqlite", &path.to_string_lossy()).unwrap();
    let t = LockTable::connect_with(opts, Default::default())
        .await
        .unwrap();
    t.lock(&Resource::lock("k", "o"), 5).await.unwrap();
    assert!(path.exists());
}

#[tokio::test]
async fn mariadb_lock_semantics() {
    let db = MariaDb::create().await;
    let table = LockTable::connect_url(&db.url).await.unwrap();
    let other = LockTable::connect_url(&db.url).await.unwrap();
    assert_eq!(table.backend_name(), "mysql");
    semantics(&table, &other).await;
    table.close().await;
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_two_pools_race() {
    let db = MariaDb::create().await;
    let a = LockTable::connect_url(&db.url).await.unwrap();
    let b = LockTable::connect_url(&db.url).await.unwrap();
    race(&a, &b).await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_active_standby_takeover() {
    let db = MariaDb::create().await;
    let a = LockTable::connect_url(&db.url).await.unwrap();
    let b = LockTable::connect_url(&db.url).await.unwrap();
    takeover(a.clone(), b.clone()).await;
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn mariadb_go_dsn_and_existing_tables() {
    let db = MariaDb::create().await;
    let first = LockTable::connect_url(&db.url).await.unwrap();
    first
        .lock(&Resource::lock("dsn", "owner"), 15)
        .await
        .unwrap();
    // Connecting again (Go DSN form) finds the existing tables and rows.
    let dsn = db.go_dsn();
    let opts = locket::sql::DbConnectOptions::for_driver("mysql", &dsn).unwrap();
    let second = LockTable::connect_with(opts, Default::default())
        .await
        .unwrap_or_else(|e| panic!("connect with DSN {dsn}: {e}"));
    assert_eq!(second.fetch("dsn").await.unwrap().owner, "owner");
    // With the parameters BOSH-rendered DSNs carry.
    let third = LockTable::connect_url(&format!("{dsn}?charset=utf8mb4&parseTime=true&timeout=5s"))
        .await
        .unwrap();
    assert_eq!(third.fetch_all("lock").await.unwrap().len(), 1);
    for t in [first, second, third] {
        t.close().await;
    }
}

#[tokio::test]
async fn unreachable_database_is_unavailable() {
    // Nothing listens on port 1.
    let err = LockTable::connect_url("mysql://root@127.0.0.1:1/locket")
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::Unavailable(_)), "{err:?}");

    // A table whose database goes away reports Unavailable, not a lock result.
    let db = MariaDb::create().await;
    let table = LockTable::connect_with(
        locket::sql::DbConnectOptions::parse(&db.url).unwrap(),
        locket::sql::PoolSettings {
            acquire_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    table.close().await;
    let err = table.lock(&Resource::lock("k", "o"), 15).await.unwrap_err();
    assert!(matches!(err, LockError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn postgres_lock_semantics() {
    let db = Postgres::create().await;
    let table = LockTable::connect_url(&db.url).await.unwrap();
    let other = LockTable::connect_url(&db.url).await.unwrap();
    assert_eq!(table.backend_name(), "postgres");
    semantics(&table, &other).await;
    table.close().await;
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_pools_race() {
    let db = Postgres::create().await;
    let a = LockTable::connect_url(&db.url).await.unwrap();
    let b = LockTable::connect_url(&db.url).await.unwrap();
    race(&a, &b).await;
    a.close().await;
    b.close().await;
}

/// Many concurrent lockers from two pools on one key, plus concurrent refreshes, releases and
/// expiries: the row always has exactly one owner and no call fails with anything but a
/// collision.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_contention_has_one_owner() {
    let db = Postgres::create().await;
    let a = LockTable::connect_url(&db.url).await.unwrap();
    let b = LockTable::connect_url(&db.url).await.unwrap();
    for round in 0..10 {
        let key = format!("hot-{round}");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let table = if i % 2 == 0 { a.clone() } else { b.clone() };
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("owner-{i}");
                let r = table
                    .lock(&Resource::lock(key.clone(), owner.clone()), 15)
                    .await;
                (owner, r)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (owner, r) = t.await.unwrap();
            match r {
                Ok(rec) => winners.push((owner, rec)),
                Err(LockError::Collision) => {}
                Err(e) => panic!("{key}: unexpected error {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "{key}: {winners:?}");
        let (owner, rec) = &winners[0];
        assert_eq!(a.fetch(&key).await.unwrap().owner, *owner);
        // The holder refreshes while others keep trying and an expirer races with the refresh.
        let (mine, theirs) = (
            Resource::lock(key.clone(), owner.clone()),
            Resource::lock(key.clone(), "thief"),
        );
        let refresh = a.lock(&mine, 15);
        let steal = b.lock(&theirs, 15);
        let expire = b.expire_if_unchanged(&key, owner, &rec.modified_id, rec.modified_index);
        let (refresh, steal, expire) = tokio::join!(refresh, steal, expire);
        let expired = expire.unwrap();
        match (refresh, steal) {
            // Refresh first (expiry then sees a changed index), or expiry first and the holder
            // re-locks before the thief.
            (Ok(_), Err(LockError::Collision)) => {
                assert_eq!(a.fetch(&key).await.unwrap().owner, *owner);
            }
            // Expiry first, thief first.
            (Err(LockError::Collision), Ok(_)) => {
                assert!(expired, "{key}: thief won without an expiry");
                assert_eq!(a.fetch(&key).await.unwrap().owner, "thief");
            }
            other => panic!("{key}: unexpected outcome {other:?}, expired {expired}"),
        }
    }
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_active_standby_takeover() {
    let db = Postgres::create().await;
    let a = LockTable::connect_url(&db.url).await.unwrap();
    let b = LockTable::connect_url(&db.url).await.unwrap();
    takeover(a.clone(), b.clone()).await;
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn postgres_key_value_dsn_and_existing_tables() {
    let db = Postgres::create().await;
    let first = LockTable::connect_url(&db.url).await.unwrap();
    first
        .lock(&Resource::lock("dsn", "owner"), 15)
        .await
        .unwrap();
    // Connecting again (lib/pq key=value form) finds the existing tables and rows.
    let dsn = db.key_value();
    let opts = locket::sql::DbConnectOptions::for_driver("postgres", &dsn).unwrap();
    let second = LockTable::connect_with(opts, Default::default())
        .await
        .unwrap_or_else(|e| panic!("connect with DSN {dsn}: {e}"));
    assert_eq!(second.fetch("dsn").await.unwrap().owner, "owner");
    // The postgresql:// scheme, with client-only and run-time parameters as lib/pq users pass.
    let url = format!(
        "{}&connect_timeout=5&application_name=locket-test&search_path=public",
        db.url.replacen("postgres://", "postgresql://", 1)
    );
    let third = LockTable::connect_url(&url).await.unwrap();
    assert_eq!(third.fetch_all("lock").await.unwrap().len(), 1);
    // Several processes starting at once all create (or find) the tables.
    let fresh = Postgres::create().await;
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = fresh.url.clone();
            tokio::spawn(async move { LockTable::connect_url(&url).await })
        })
        .collect();
    for start in starts {
        let t = start.await.unwrap().unwrap();
        t.health_check().await.unwrap();
        t.close().await;
    }
    for t in [first, second, third] {
        t.close().await;
    }
}

#[tokio::test]
async fn postgres_unreachable_or_gone_is_unavailable() {
    // Nothing listens on port 1.
    let err = LockTable::connect_url("postgres://postgres@127.0.0.1:1/locket?sslmode=disable")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LockError::Unavailable(m) if m.contains("PostgreSQL")),
        "{err:?}"
    );
    // A database that does not exist.
    let db = Postgres::create().await;
    let missing = db.url.replace(&db.name, &format!("{}_missing", db.name));
    let err = LockTable::connect_url(&missing).await.unwrap_err();
    assert!(matches!(err, LockError::Unavailable(_)), "{err:?}");

    // A table whose pool is gone reports Unavailable, not a lock result.
    let table = LockTable::connect_with(
        locket::sql::DbConnectOptions::parse(&db.url).unwrap(),
        locket::sql::PoolSettings {
            acquire_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    table.close().await;
    let err = table.lock(&Resource::lock("k", "o"), 15).await.unwrap_err();
    assert!(matches!(err, LockError::Unavailable(_)), "{err:?}");
}
