# PostgreSQL for the store's tests (crates/store, the durability acceptance tests): a throw-away
# cluster on 127.0.0.1:$TERRANE_PG_PORT in a temporary directory, run as an unprivileged user
# (initdb refuses root). Sourced by scripts/test.
NEEDED_PACKAGES+=(postgresql)

TERRANE_PG_PORT="${TERRANE_PG_PORT:-$(free_port)}"

postgres_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] || { echo "postgres: no /usr/lib/postgresql/*/bin (is the postgresql package installed?)" >&2; return 1; }
  echo "$d"
}

postgres_as() {
  # Run a command as the cluster's owner: root hands over to the postgres user.
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

postgres_start() {
  local bin
  bin=$(postgres_bin) || return 1
  TERRANE_PG_DIR=$(mktemp -d /tmp/terrane-pg.XXXXXX)
  [ "$(id -u)" = 0 ] && chown postgres: "$TERRANE_PG_DIR"
  postgres_as "$bin/initdb" -D "$TERRANE_PG_DIR/data" -U terrane -A trust --no-sync >"$TERRANE_PG_DIR/initdb.log" 2>&1 \
    || { cat "$TERRANE_PG_DIR/initdb.log" >&2; return 1; }
  postgres_as "$bin/pg_ctl" -D "$TERRANE_PG_DIR/data" -l "$TERRANE_PG_DIR/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $TERRANE_PG_PORT -k $TERRANE_PG_DIR -c max_connections=200" start >/dev/null \
    || { cat "$TERRANE_PG_DIR/server.log" >&2; return 1; }
  export TERRANE_PG_DIR
  export TERRANE_TEST_POSTGRES="postgres://terrane@127.0.0.1:$TERRANE_PG_PORT/postgres"
  echo "postgres: test cluster at $TERRANE_TEST_POSTGRES"
}

postgres_stop() {
  [ -n "${TERRANE_PG_DIR:-}" ] || return 0
  local bin
  bin=$(postgres_bin) || return 1
  postgres_as "$bin/pg_ctl" -D "$TERRANE_PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$TERRANE_PG_DIR"
  unset TERRANE_PG_DIR TERRANE_TEST_POSTGRES
}
