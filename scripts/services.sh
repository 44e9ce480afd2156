#!/usr/bin/env bash
# Starts the local services the test suite talks to, when they are installed but down:
# PostgreSQL (127.0.0.1:5432), Redis (127.0.0.1:6379) and NATS JetStream (127.0.0.1:4222).
# Tests never start them themselves; they fail with a clear message when one is missing.
set -uo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_up() {
  for _ in $(seq 1 50); do up "$1" && return 0; sleep 0.2; done
  echo "services: $2 did not come up on port $1" >&2
  return 1
}

if ! up 5432; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    wait_up 5432 PostgreSQL || exit 1
  else
    echo "services: PostgreSQL is not running on 127.0.0.1:5432 and is not installed here" >&2
    exit 1
  fi
fi

if ! up 6379 && command -v redis-server >/dev/null; then
  echo "services: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir "${TMPDIR:-/tmp}" --logfile "${TMPDIR:-/tmp}/plinth-redis.log" || true
  wait_up 6379 Redis || true
fi

if ! up 4222 && command -v nats-server >/dev/null; then
  echo "services: starting NATS JetStream"
  store="${TMPDIR:-/tmp}/plinth-nats"
  mkdir -p "$store"
  nohup nats-server -a 127.0.0.1 -p 4222 -js -sd "$store" >"$store/nats.log" 2>&1 &
  wait_up 4222 NATS || true
fi
exit 0
