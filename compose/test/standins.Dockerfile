# Stand-ins for the official images docker-compose.yml uses, for scripts/compose-test on a
# machine that reaches no image registry: one image from Debian's packages, on the base image
# the script makes with debootstrap. docker-compose.test.yml runs it as
#   nats      Debian's nats-server (for `nats`), with compose/nats/nats.conf
#   mysql     Debian's MariaDB (for `mysql:8.0`), through mysql-entrypoint
#   uaa-tls   Debian's HAProxy (for `haproxy`), with compose/haproxy/*.cfg
#   lb        the same
#   prometheus  Debian's Prometheus (for `prom/prometheus`), with compose/prometheus/prometheus.yml
# (`uaa` runs the project's uaa-stand-in from the routing-tier image instead; Debian has no
# Grafana, so `grafana` is not run: test/check-observability, run in this image with its curl
# and jq, checks the dashboard's queries against the Prometheus stand-in instead.)
# Build context: compose/.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends mariadb-server mariadb-client nats-server haproxy \
    prometheus curl jq ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/lib/mysql/*
COPY bin/healthcheck test/mysql-entrypoint test/check-observability /usr/local/bin/
