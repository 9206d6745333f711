//! routing-api's store when a write keeps losing races: a transaction that fails as a deadlock
//! victim is run again (up to 25 attempts in all, `store::shared::MAX_ATTEMPTS`), and once the
//! attempts are spent the API answers `503 DBCommunicationError` with the database's message
//! (spec B.1) and stores nothing; the next write after the contention ends succeeds.
//!
//! The contention is made on the test's own MariaDB database with two triggers on `routes`:
//! one records every insert attempt in a MyISAM table (not transactional, so the record
//! survives the rollback), the other fails the insert with error 1213 (`ER_LOCK_DEADLOCK`),
//! which is what a real deadlock victim gets. (An unreachable database is not retried by the
//! store; its 503 is routing_api_lock.rs's `a_database_outage_is_503...`.)

use integration::mariadb::TestDatabase;
use integration::routing_api::{Database, RoutingApi};
use serde_json::Value;

/// `store::shared::MAX_ATTEMPTS`.
const ATTEMPTS: u64 = 25;
const DEADLOCK_TEXT: &str = "test trigger: always the deadlock victim";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_retries_running_out_is_503_db_communication_error() {
    let db = TestDatabase::create("ra_retries_spent");
    let mut api = RoutingApi::start(Database::mysql(&db)).await;
    // The API's own route is in before the triggers go in (its refresh is max_ttl / 2 away).
    api.wait_own_route().await;

    db.exec(
        "CREATE TABLE upsert_attempts (route VARCHAR(255) NOT NULL) ENGINE=MyISAM; \
         CREATE TRIGGER count_attempts BEFORE INSERT ON routes FOR EACH ROW \
           INSERT INTO upsert_attempts (route) VALUES (NEW.route); \
         CREATE TRIGGER lose_every_race BEFORE INSERT ON routes FOR EACH ROW \
           FOLLOWS count_attempts \
           SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, \
           MESSAGE_TEXT = 'test trigger: always the deadlock victim'",
    );
    let attempts = |route: &str| -> u64 {
        db.scalar(&format!(
            "SELECT COUNT(*) FROM upsert_attempts WHERE route = '{route}'"
        ))
        .parse()
        .expect("COUNT(*) is a number")
    };

    let r = api
        .post(
            "/routing/v1/routes",
            r#"[{"route":"deadlocked.example.com","port":80,"ip":"10.0.0.1","ttl":120}]"#,
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.dump());
    let v: Value = serde_json::from_slice(&r.body).expect("error body is JSON");
    assert_eq!(v["name"], "DBCommunicationError", "{v}");
    assert_eq!(v["message"], format!("conflict: {DEADLOCK_TEXT}"), "{v}");
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    // Every attempt reached the database: retried, and not past the bound.
    assert_eq!(
        attempts("deadlocked.example.com"),
        ATTEMPTS,
        "{}",
        api.log()
    );
    let listed = api.get("/routing/v1/routes").await;
    assert_eq!(listed.status, 200, "{}", listed.dump());
    assert!(
        !listed.body_str().contains("deadlocked.example.com"),
        "a write answered 503 was stored: {}",
        listed.body_str()
    );

    // The contention ends: the next write goes through at the first attempt.
    db.exec("DROP TRIGGER lose_every_race");
    let r = api
        .post(
            "/routing/v1/routes",
            r#"[{"route":"after.example.com","port":80,"ip":"10.0.0.1","ttl":120}]"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    assert_eq!(attempts("after.example.com"), 1);
    assert!(api
        .http_routes()
        .await
        .iter()
        .any(|r| r["route"] == "after.example.com"));
    // Not a fault of the process: it kept running throughout.
    assert!(api.try_exit().is_none(), "exited:\n{}", api.log());
}
