//! How the routing API reaches its database: the store's connection settings from the
//! `sqldb.*` keys, shared by the store and the lock table ([`crate::lock`]), which live in the
//! same database.

use std::time::Duration;

use crate::config::{Config, Database};
use crate::store::{DbKind, StoreConfig};

/// The store settings for the configured database.
pub fn store_config(config: &Config) -> StoreConfig {
    let mut sc = StoreConfig::default();
    match &config.database {
        Database::Mysql {
            host,
            port,
            schema,
            username,
            password,
        } => {
            sc.kind = DbKind::Mysql;
            sc.host = host.clone();
            sc.port = *port;
            sc.schema = schema.clone();
            sc.username = username.clone();
            sc.password = password.expose().to_owned();
        }
        Database::Postgres {
            host,
            port,
            database,
            username,
            password,
        } => {
            sc.kind = DbKind::Postgres;
            sc.host = host.clone();
            sc.port = *port;
            sc.schema = database.clone();
            sc.username = username.clone();
            sc.password = password.expose().to_owned();
        }
        Database::Sqlite { path } => {
            sc.kind = DbKind::Sqlite;
            sc.sqlite_path = path.clone();
        }
    }
    sc.ca_cert = (!config.sqldb.ca_cert.is_empty()).then(|| config.sqldb.ca_cert.clone());
    sc.skip_ssl_validation = config.sqldb.skip_ssl_validation;
    sc.skip_hostname_validation = config.sqldb.skip_hostname_validation;
    sc.max_open_connections = config.sqldb.max_open_connections;
    sc.max_idle_connections = config.sqldb.max_idle_connections;
    sc.connections_max_lifetime =
        Duration::from_secs(config.sqldb.connections_max_lifetime_seconds);
    sc
}
