# A throwaway PostgreSQL cluster for the decision-log tests: Debian's postgresql, initdb into a
# temporary folder, a free port on 127.0.0.1, stopped and removed when scripts/test.sh exits.
# Sourced by scripts/test.sh: idempotent, quiet, no stdin. PostgreSQL refuses to run as root, so
# as root the cluster belongs to the `postgres` user.
_screening_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

if [ -z "$(_screening_pg_bin)" ] || [ ! -x "$(_screening_pg_bin)/initdb" ]; then
  # Other hooks may be installing at the same moment: wait for the dpkg lock instead of failing.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends postgresql >/dev/null
fi

_screening_pg_run() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Clusters left behind by runs that were killed (their test.sh is gone): stop and remove them.
for _old in /tmp/screening-pg.*; do
  [ -f "$_old/owner" ] || continue
  if ! kill -0 "$(cat "$_old/owner")" 2>/dev/null; then
    _screening_pg_run "$(_screening_pg_bin)/pg_ctl" -D "$_old/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$_old"
  fi
done

if [ -n "${SCREENING_TEST_POSTGRES_DATA:-}" ] && [ -f "${SCREENING_TEST_POSTGRES_DATA}/postmaster.pid" ]; then
  :  # sourced twice in one run: the cluster is already up
else
  SCREENING_TEST_POSTGRES_BIN=$(_screening_pg_bin)
  _pg_dir=$(mktemp -d /tmp/screening-pg.XXXXXX)
  echo $$ > "$_pg_dir/owner"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$_pg_dir"; fi
  _pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  _screening_pg_run "$SCREENING_TEST_POSTGRES_BIN/initdb" -D "$_pg_dir/data" -U postgres -A trust -E UTF8 \
    --no-locale >"$_pg_dir/initdb.log" 2>&1
  # In the config file, not on pg_ctl's command line, so a test can stop and start it plainly.
  cat >> "$_pg_dir/data/postgresql.conf" <<EOF
port = $_pg_port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$_pg_dir'
max_connections = 200
EOF
  _screening_pg_run "$SCREENING_TEST_POSTGRES_BIN/pg_ctl" -D "$_pg_dir/data" -l "$_pg_dir/server.log" -w -t 60 start >/dev/null
  _screening_pg_run "$SCREENING_TEST_POSTGRES_BIN/createdb" -h 127.0.0.1 -p "$_pg_port" -U postgres screening_test

  export SCREENING_TEST_POSTGRES_BIN
  export SCREENING_TEST_POSTGRES_DATA="$_pg_dir/data"
  export SCREENING_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$_pg_port/screening_test"
  _screening_pg_stop() {
    _screening_pg_run "$SCREENING_TEST_POSTGRES_BIN/pg_ctl" -D "$SCREENING_TEST_POSTGRES_DATA" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$(dirname "$SCREENING_TEST_POSTGRES_DATA")"
  }
  _prev_exit_trap=$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")
  # shellcheck disable=SC2064
  trap "_screening_pg_stop${_prev_exit_trap:+; $_prev_exit_trap}" EXIT
fi
# Under scripts/test.sh a missing server fails the PostgreSQL tests instead of skipping them.
export SCREENING_REQUIRE_POSTGRES=1
