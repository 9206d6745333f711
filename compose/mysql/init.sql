-- Run once by the mysql image's entrypoint, on an empty data directory: routing-api's and
-- Locket's databases and users (compose/config/routing-api.yml, compose/config/locket.json).
-- Development passwords only.
CREATE DATABASE IF NOT EXISTS routing_api;
CREATE DATABASE IF NOT EXISTS locket;
CREATE USER IF NOT EXISTS 'routing_api'@'%' IDENTIFIED BY 'routing-api-dev-password';
GRANT ALL PRIVILEGES ON routing_api.* TO 'routing_api'@'%';
CREATE USER IF NOT EXISTS 'locket'@'%' IDENTIFIED BY 'locket-dev-password';
GRANT ALL PRIVILEGES ON locket.* TO 'locket'@'%';
FLUSH PRIVILEGES;
