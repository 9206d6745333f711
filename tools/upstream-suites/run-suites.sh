#!/usr/bin/env bash
# Run Cloud Foundry upstream test suites against a given binary.
#
#   run-suites.sh routing-api <path-to-routing-api> [<path-to-locket>]
#   run-suites.sh gorouter    <path-to-gorouter>
#
# Environment knobs:
#   SUITE_TIMEOUT   overall wall-clock limit (default 45m routing-api, 60m gorouter)
#   GINKGO_FOCUS    optional regexp passed as -ginkgo.focus
#   GINKGO_SKIP     optional regexp passed as -ginkgo.skip
#   GINKGO_FOCUS_FILE / GINKGO_SKIP_FILE  optional -ginkgo.focus-file / -ginkgo.skip-file
#   SHARDS=3        gorouter only: run the suite as 3 file-based shards + the "hang shard" in
#                   parallel, each in its own namespaces (default 1 = sequential, as upstream CI).
#                   Useful when many specs fail by timeout (each can wait 10-70 s). Caveat: the
#                   extra load makes a few upstream specs racy (upstream binary: 3 failures in
#                   x_forwarded_proto_integration_test.go:199/:262 with SHARDS=3, 0 sequentially).
#   SPEC_TIMEOUT    per-spec limit in the gorouter "hang shard" (default 60s; 20s is enough)
#   ONLY_SHARDS     with SHARDS=3: run only these gorouter shards (e.g. "2 4")
#   LOCKET_BINARY   locket binary for routing-api suite (default: upstream build in bin/locket)
#   REBUILD_TESTS=1 force recompilation of the suite test binaries
#
# Everything runs inside private network (+mount) namespaces (unshare -n -m):
# only loopback + (gorouter) a dummy interface with a default route exist there.
# routing-api: a private mariadbd (root/password on 127.0.0.1:3306) from a fresh copy of
#   mysql/data-template.  gorouter: dnsmasq answers *.localhost.routing.cf-app.com -> 127.0.0.1.
# Output: logs/<suite>-<label>-<timestamp>.log  (+ a "-latest" symlink) and a summary on stdout.
set -u
usage() { echo "usage: $0 routing-api|gorouter <path-to-binary> [<locket-binary>]" >&2; exit 2; }
H=${UPSTREAM_HARNESS:-/work/upstream-harness}
SRC=$H/src/code.cloudfoundry.org
BIN=$H/bin
. $H/env.sh
export PATH=$PATH:/usr/sbin:/sbin

build_if_needed() { # <out> <go-build-args...>
  local out=$1; shift
  if [ ! -x "$out" ] || [ "${REBUILD_TESTS:-0}" = 1 ]; then
    echo ">> building $out" >&2
    (cd "$SRC" && go "$@" -o "$out") >&2 || { echo "build of $out failed" >&2; exit 3; }
  fi
}

# ---------------------------------------------------------------- inner parts (run inside namespaces)
inner_common() {
  ip link set lo up
  # make "localhost" resolve to loopback regardless of the host's files
  printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$RUNDIR/hosts"
  mount --bind "$RUNDIR/hosts" /etc/hosts
}

inner_routing_api() {
  inner_common
  local DATADIR=$RUNDIR/mysql-data
  rm -rf "$DATADIR"; cp -a $H/mysql/data-template "$DATADIR"
  mariadbd --no-defaults --user=root --datadir="$DATADIR" --socket="$RUNDIR/mysqld.sock" \
    --pid-file="$RUNDIR/mysqld.pid" --port=3306 --bind-address=127.0.0.1 \
    --log-error="$RUNDIR/mysqld.err" --innodb-buffer-pool-size=128M --max-connections=500 \
    --skip-log-bin &
  local MPID=$!
  for i in $(seq 1 60); do
    mariadb --no-defaults -uroot --socket="$RUNDIR/mysqld.sock" -e 'select 1' >/dev/null 2>&1 && break
    sleep 0.5
  done
  mariadb --no-defaults -uroot --socket="$RUNDIR/mysqld.sock" <<'SQL' || { echo "mysql setup failed"; cat "$RUNDIR/mysqld.err"; }
ALTER USER 'root'@'localhost' IDENTIFIED BY 'password';
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY 'password';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'root'@'::1' IDENTIFIED BY 'password';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'::1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
  echo ">> private mariadbd up (pid $MPID) in netns; running suite"
  cd $SRC/routing-api/cmd/routing-api
  ROUTING_API_BINARY="$TARGET" LOCKET_BINARY="$LOCKET" \
    "$BIN/routing-api.test" -test.timeout=0 -ginkgo.v -ginkgo.no-color -ginkgo.timeout=2h \
      ${GINKGO_FOCUS:+-ginkgo.focus="$GINKGO_FOCUS"} ${GINKGO_SKIP:+-ginkgo.skip="$GINKGO_SKIP"} \
      ${GINKGO_FOCUS_FILE:+-ginkgo.focus-file="$GINKGO_FOCUS_FILE"} ${GINKGO_SKIP_FILE:+-ginkgo.skip-file="$GINKGO_SKIP_FILE"}
  local rc=$?
  kill $MPID 2>/dev/null; wait $MPID 2>/dev/null
  rm -rf "$DATADIR"
  return $rc
}

inner_gorouter() {
  inner_common
  # default route onto a veth pair whose both ends live in this namespace (no dummy module
  # on this kernel); packets to non-loopback addresses are simply dropped inside the namespace.
  if ip link add dummy0 type dummy 2>/dev/null; then DEV=dummy0; else
    ip link add hv0 type veth peer name hv1; ip link set hv1 up; DEV=hv0; fi
  ip addr add 10.255.255.1/32 dev $DEV
  ip link set $DEV up
  ip route add default dev $DEV
  ip -br addr; ip route
  printf 'nameserver 127.0.0.1\n' > "$RUNDIR/resolv.conf"
  mount --bind "$RUNDIR/resolv.conf" /etc/resolv.conf
  cat > "$RUNDIR/dnsmasq.conf" <<EOF
no-resolv
no-hosts
listen-address=127.0.0.1
bind-interfaces
port=53
address=/localhost.routing.cf-app.com/127.0.0.1
user=root
pid-file=$RUNDIR/dnsmasq.pid
EOF
  dnsmasq --conf-file="$RUNDIR/dnsmasq.conf" --keep-in-foreground --log-facility="$RUNDIR/dnsmasq.log" &
  local DPID=$!
  sleep 0.5
  getent hosts foo.localhost.routing.cf-app.com || echo "WARNING: DNS for *.localhost.routing.cf-app.com not working"
  echo ">> dnsmasq up (pid $DPID) in netns; running suite"
  cd $SRC/gorouter/integration
  export PATH=$H/tools/bin:$PATH   # nginx wrapper (one spec uses nginx)
  export GOROUTER_BINARY="$TARGET" NATS_SERVER_BINARY=${NATS_SERVER_BINARY:-/usr/sbin/nats-server}
  local rc=0
  if [ -n "${FOCUS_LIST:-}" ]; then
    # one process per spec, each with its own ginkgo suite timeout (specs that can block forever)
    while IFS= read -r f; do
      [ -n "$f" ] || continue
      echo ">> isolated spec run (timeout ${SPEC_TIMEOUT:-60s}): $f"
      "$BIN/gorouter-integration.test" -test.timeout=0 -ginkgo.v -ginkgo.no-color \
        -ginkgo.timeout=${SPEC_TIMEOUT:-60s} -ginkgo.grace-period=5s -ginkgo.focus="$f" || rc=1
    done <<< "$FOCUS_LIST"
  else
    "$BIN/gorouter-integration.test" -test.timeout=0 -ginkgo.v -ginkgo.no-color -ginkgo.timeout=2h \
      ${GINKGO_FOCUS:+-ginkgo.focus="$GINKGO_FOCUS"} ${GINKGO_SKIP:+-ginkgo.skip="$GINKGO_SKIP"} \
      ${GINKGO_FOCUS_FILE:+-ginkgo.focus-file="$GINKGO_FOCUS_FILE"} ${GINKGO_SKIP_FILE:+-ginkgo.skip-file="$GINKGO_SKIP_FILE"}
    rc=$?
  fi
  kill $DPID 2>/dev/null; wait $DPID 2>/dev/null
  return $rc
}

main() {
if [ "${1:-}" = "__inner" ]; then
  shift; what=$1
  export PATH=/usr/sbin:/sbin:$PATH
  case $what in
    routing-api) inner_routing_api ;;
    gorouter) inner_gorouter ;;
  esac
  return $?
fi

# ---------------------------------------------------------------- outer part
[ $# -ge 2 ] || usage
SUITE=$1; TARGET=$(readlink -f "$2")
[ -x "$TARGET" ] || { echo "binary $2 not found/executable" >&2; exit 2; }

# label for the log file: "upstream" if it is ours in bin/, else "ours"
case "$TARGET" in $BIN/*) LABEL=upstream ;; *) LABEL=ours ;; esac
TS=$(date +%Y%m%d-%H%M%S)
LOG=$H/logs/$SUITE-$LABEL-$TS.log
export RUNDIR=$H/run/$SUITE-$TS
mkdir -p "$RUNDIR" $H/logs
# snapshot the binary so a concurrent rebuild cannot change it mid-run
ORIG_TARGET=$TARGET
cp -p "$TARGET" "$RUNDIR/$(basename "$TARGET")" && TARGET=$RUNDIR/$(basename "$TARGET")
if [ -n "${CAPTURE:-}" ]; then   # CAPTURE=1: record cmdline+config of every invocation in $RUNDIR/captured
  export CAPTURE_REAL=$TARGET CAPTURE_DIR=$RUNDIR/captured; TARGET=$H/capture-wrapper.sh
fi
export TARGET

case $SUITE in
  routing-api)
    build_if_needed $BIN/routing-api.test test -c -vet=off ./routing-api/cmd/routing-api
    build_if_needed $BIN/locket build code.cloudfoundry.org/locket/cmd/locket
    LOCKET=$(readlink -f "${3:-${LOCKET_BINARY:-$BIN/locket}}")
    [ -x "$LOCKET" ] || { echo "locket binary $LOCKET not found" >&2; exit 2; }
    cp -p "$LOCKET" "$RUNDIR/locket.bin" && LOCKET=$RUNDIR/locket.bin
    export LOCKET
    if [ ! -d $H/mysql/data-template ]; then
      mkdir -p $H/mysql
      mariadb-install-db --no-defaults --datadir=$H/mysql/data-template --user=root \
        --auth-root-authentication-method=normal --skip-test-db > $H/logs/mariadb-install.log 2>&1 \
        || { echo "mariadb-install-db failed" >&2; exit 3; }
    fi
    T=${SUITE_TIMEOUT:-45m}
    echo "routing-api suite: binary=$TARGET locket=$LOCKET timeout=$T log=$LOG" ;;
  gorouter)
    build_if_needed $BIN/gorouter-integration.test test -c -vet=off ./gorouter/integration
    T=${SUITE_TIMEOUT:-60m}
    echo "gorouter integration suite: binary=$TARGET timeout=$T log=$LOG" ;;
  *) usage ;;
esac

{
  echo "# suite=$SUITE binary=$ORIG_TARGET (run copy $TARGET) ${LOCKET:+locket=$LOCKET} started $(date -Is)"
  echo "# binary mtime: $(stat -c %y "$ORIG_TARGET")  sha256: $(sha256sum "$ORIG_TARGET" | cut -c1-16)"
} > "$LOG"
# timeout signals its whole process group (mariadbd, nats, gorouter, ...) on expiry
if [ "$SUITE" = gorouter ]; then
  # The 36 xfcc route-service specs (http and https clients, with and without a client
  # certificate) block forever on a channel receive when the router does not call the route
  # service (no timeout in the spec), so they always run one process per spec with a ginkgo
  # timeout ("hang shard", SPEC_TIMEOUT); everything else is skipped there.
  HANG=""
  for m in always_forward forward sanitize_set; do for cs in http https; do for rs in http https; do for cc in false true; do for x in false true; do
    [ $cs = http ] && [ $cc = true ] && continue
    HANG+="forwarded_client_cert == $m\\s+client request scheme: $cs\\s+route service request scheme: $rs\\s+client cert: $cc\\s+client XFCC header: $x"$'\n'
  done; done; done; done; done
  HANG_SKIP='forwarded_client_cert == \S+\s+client request scheme: https?\s'
  A='x_forwarded_proto_integration_test.go'
  B='xfcc_integration_test.go|tls_to_backends_test.go|route_services_test.go|w3c_tracing_test.go|gdpr_test.go|header_test.go|retry_test.go'
  if [ -n "${GINKGO_FOCUS:-}${GINKGO_FOCUS_FILE:-}" ]; then
    SH="0"            # user-focused run: no sharding, no hang shard
  elif [ "${SHARDS:-1}" = 3 ]; then
    SH="1 2 3 4"
  else
    SH="0 4"
  fi
  [ -n "${ONLY_SHARDS:-}" ] && SH=$ONLY_SHARDS   # rerun some shards only, e.g. "2 4"
  pids=()
  for k in $SH; do
    ff=; sf=; fl=
    case $k in
      0) ;;
      1) ff=$A ;;
      2) ff=$B ;;
      3) sf="$A|$B" ;;
      4) fl=$HANG ;;
    esac
    ( export RUNDIR=$RUNDIR/shard$k; mkdir -p "$RUNDIR"
      GINKGO_FOCUS_FILE=$ff GINKGO_SKIP_FILE=$sf FOCUS_LIST=$fl GINKGO_SKIP=${GINKGO_SKIP:-$HANG_SKIP} \
        timeout --kill-after=60s "$T" \
        unshare -n -m --propagation private bash "$0" __inner "$SUITE" > "$LOG.shard$k" 2>&1
      src=$?; echo "# shard $k finished $(date -Is) rc=$src" >> "$LOG.shard$k"; exit $src ) &
    pids+=($!)
    # unsharded mode: run the main part and the hang shard one after the other
    [ "${SHARDS:-1}" = 3 ] || wait $!
  done
  RC=0
  [ "${SHARDS:-1}" = 3 ] && for p in "${pids[@]}"; do wait $p; done
  for k in $SH; do
    echo "################ shard $k" >> "$LOG"; cat "$LOG.shard$k" >> "$LOG"; rm -f "$LOG.shard$k"
    tail -1 "$LOG" | grep -q 'rc=0$' || RC=1
  done
  grep -q '^# shard .* rc=124$' "$LOG" && RC=124
else
  timeout --kill-after=60s "$T" unshare -n -m --propagation private \
    bash "$0" __inner "$SUITE" >> "$LOG" 2>&1
  RC=$?
fi
echo "# finished $(date -Is) rc=$RC" >> "$LOG"
[ $RC = 124 ] && echo "# TIMED OUT after $T" >> "$LOG"
ln -sfn "$(basename "$LOG")" "$H/logs/$SUITE-$LABEL-latest.log"
# drop the (large) binary snapshots; keep captured configs etc.
[ -n "${KEEP_RUN:-}" ] || rm -f "$RUNDIR/$(basename "$ORIG_TARGET")" "$RUNDIR/locket.bin"

# ---------------------------------------------------------------- summary
echo "exit code: $RC$([ $RC = 124 ] && echo ' (TIMEOUT)')"
python3 $H/summarize.py "$LOG" --json "${LOG%.log}.json"
echo "log: $LOG"
echo "details: python3 $H/summarize.py $LOG --details"
return $RC
}

# bash reads scripts lazily: keep the call and exit on one line so edits to this file
# while a run is in progress cannot corrupt the run.
main "$@"; exit $?
