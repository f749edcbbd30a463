# etcd for the directory's etcd backend tests (crates/directory, feature `etcd`).
# Sourced by scripts/test: a throwaway etcd on 127.0.0.1 with free ports and a temp data dir.
# etcd-client compiles etcd's protobuf files at build time: protoc plus the well-known types.
NEEDED_PACKAGES+=(etcd-server protobuf-compiler libprotobuf-dev curl)
CARGO_FEATURES+=(directory/etcd)

ETCD_PID=""
ETCD_DIR=""


etcd_start() {
  local client_port peer_port
  client_port=$(free_port)
  peer_port=$(free_port)
  ETCD_DIR=$(mktemp -d /tmp/terrane-etcd.XXXXXX)
  etcd --name terrane-test --data-dir "$ETCD_DIR/data" \
    --listen-client-urls "http://127.0.0.1:$client_port" \
    --advertise-client-urls "http://127.0.0.1:$client_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "terrane-test=http://127.0.0.1:$peer_port" \
    >"$ETCD_DIR/etcd.log" 2>&1 &
  ETCD_PID=$!
  local i
  for i in $(seq 1 100); do
    if curl -sf "http://127.0.0.1:$client_port/health" >/dev/null 2>&1; then
      export TERRANE_TEST_ETCD="http://127.0.0.1:$client_port"
      echo "etcd ready at $TERRANE_TEST_ETCD"
      return 0
    fi
    if ! kill -0 "$ETCD_PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "etcd did not start; its log:" >&2
  cat "$ETCD_DIR/etcd.log" >&2
  return 1
}

etcd_stop() {
  if [ -n "$ETCD_PID" ]; then
    kill "$ETCD_PID" 2>/dev/null || true
    wait "$ETCD_PID" 2>/dev/null || true
  fi
  if [ -n "$ETCD_DIR" ]; then
    rm -rf "$ETCD_DIR"
  fi
}
