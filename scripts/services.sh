#!/usr/bin/env bash
# Starts the local services the test suite talks to: PostgreSQL (127.0.0.1:5432), Redis
# (127.0.0.1:6379), NATS JetStream (127.0.0.1:4222) and an S3 server (moto, 127.0.0.1:5999).
# Installs what is missing from the package registries: PostgreSQL, Redis and NATS from Debian's
# packages (a cluster installed here trusts loopback connections, as the tests connect as
# `postgres` from 127.0.0.1), moto from PyPI (in a private virtualenv), nginx (the replica tests
# start their own nginx in front of their servers) and chromium (the dashboard's browser tests
# drive it with playwright-core) from Debian's packages. Tests never start these services
# themselves; they fail with a clear message when one is missing.
set -uo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_up() {
  for _ in $(seq 1 50); do up "$1" && return 0; sleep 0.2; done
  echo "services: $2 did not come up on port $1" >&2
  return 1
}

# Debian's packages, installed when missing (apt-get only: elsewhere, install them yourself).
deb_install() {
  command -v apt-get >/dev/null || return 1
  apt-get install -y -q "$@" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$@" >/dev/null 2>&1; }
}

if ! up 5432 && ! command -v pg_ctlcluster >/dev/null; then
  echo "services: installing PostgreSQL from Debian's packages"
  if deb_install postgresql; then
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
      [ -f "$hba" ] || continue
      sed -i -E 's/^(host[[:space:]]+all[[:space:]]+all[[:space:]]+(127\.0\.0\.1\/32|::1\/128)[[:space:]]+)[a-z0-9-]+$/\1trust/' "$hba"
      # The package may have started the cluster already: it reads the file again.
      version="$(basename "$(dirname "$(dirname "$hba")")")"
      pg_ctlcluster --skip-systemctl-redirect "$version" main reload >/dev/null 2>&1 || true
    done
  else
    echo "services: cannot install PostgreSQL" >&2
  fi
fi
if ! up 6379 && ! command -v redis-server >/dev/null; then
  echo "services: installing Redis from Debian's packages"
  deb_install redis-server || echo "services: cannot install Redis" >&2
  service redis-server stop >/dev/null 2>&1 || true
fi
if ! up 4222 && ! command -v nats-server >/dev/null; then
  echo "services: installing NATS from Debian's packages"
  deb_install nats-server || echo "services: cannot install NATS" >&2
  # The package's own service runs without JetStream; the tests need the one started below.
  service nats-server stop >/dev/null 2>&1 || true
fi

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
# moto's S3 server: a real process speaking the S3 API, keeping objects in memory.
if ! up 5999; then
  moto_venv="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/plinth/moto"
  if [ ! -x "$moto_venv/bin/moto_server" ]; then
    echo "services: installing moto[server] from PyPI"
    python3 -m venv "$moto_venv" >&2 && "$moto_venv/bin/python" -m pip install --quiet "moto[server]==5.2.6" >&2 \
      || echo "services: cannot install moto" >&2
  fi
  if [ -x "$moto_venv/bin/moto_server" ]; then
    echo "services: starting moto (S3)"
    nohup "$moto_venv/bin/moto_server" -H 127.0.0.1 -p 5999 >"${TMPDIR:-/tmp}/plinth-moto.log" 2>&1 &
    wait_up 5999 moto || true
  fi
fi

if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ] && command -v apt-get >/dev/null; then
  echo "services: installing nginx from Debian's packages"
  deb_install nginx || echo "services: cannot install nginx" >&2
  # Debian's package starts a server on port 80; the tests start their own.
  service nginx stop >/dev/null 2>&1 || true
fi

if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  echo "services: installing chromium from Debian's packages"
  deb_install chromium || echo "services: cannot install chromium" >&2
fi
exit 0
