#!/usr/bin/env bash
# One command from a fresh clone to a running gateway in front of a demo upstream:
#   bash deploy/local/demo.sh            # RESET=1 starts from an empty store
# Checks its ports first, installs redis-server from Debian's packages if missing, builds keygate
# (release; the first build takes a few minutes), starts a private Redis and the demo upstream,
# creates an org, two users, a project, a data-plane key and a management key, prints a working
# curl and the exports the README's next commands use, and runs keygate. Ctrl-C, SIGTERM or
# SIGHUP stop everything it started. The store lives in deploy/local/run and is kept between runs.
#
# Ports (each settable): KEYGATE_PORT 8080, ADMIN_PORT 9090, UPSTREAM_PORT 9000, REDIS_PORT 6399.
# DEMO_DIR (default deploy/local/run) holds the store; KEYGATE_BIN runs that binary instead of
# building one (the tests do both).
set -euo pipefail
cd "$(dirname "$0")/../.."
KEYGATE_PORT=${KEYGATE_PORT:-8080}
ADMIN_PORT=${ADMIN_PORT:-9090}
UPSTREAM_PORT=${UPSTREAM_PORT:-9000}
REDIS_PORT=${REDIS_PORT:-6399}
RUN=${DEMO_DIR:-deploy/local/run}

# Ports first: a demo already running holds them, and its data must not be touched.
for pair in "KEYGATE_PORT $KEYGATE_PORT" "ADMIN_PORT $ADMIN_PORT" "UPSTREAM_PORT $UPSTREAM_PORT" "REDIS_PORT $REDIS_PORT"; do
  set -- $pair
  if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
    echo "port $2 is in use (is a demo already running?); set $1=... to use another" >&2
    exit 1
  fi
done
if [ "${RESET:-0}" = 1 ]; then rm -rf "$RUN"; fi
mkdir -p "$RUN"

if ! command -v redis-server >/dev/null 2>&1; then
  echo "==> installing redis-server (Debian package)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

if [ -n "${KEYGATE_BIN:-}" ]; then
  KG=$(realpath "$KEYGATE_BIN")
else
  echo "==> building keygate (release; the first build takes a few minutes)"
  cargo build --release --quiet
  KG=$PWD/target/release/keygate
fi

PIDS=()
cleanup() {
  trap - EXIT INT TERM HUP
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# A private Redis, persisting to deploy/local/run (AOF on, as in production).
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$(realpath "$RUN")" --appendonly yes --save "" >"$RUN/redis.log" 2>&1 &
PIDS+=($!)
"$KG" demo-upstream --echo --listen "127.0.0.1:$UPSTREAM_PORT" 2>"$RUN/upstream.log" &
PIDS+=($!)
export KEYGATE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

# config/demo.toml with this run's ports.
CFG=$RUN/keygate.toml
sed -e "s/127.0.0.1:8080/127.0.0.1:$KEYGATE_PORT/" -e "s/127.0.0.1:9090/127.0.0.1:$ADMIN_PORT/" \
    -e "s/127.0.0.1:9000/127.0.0.1:$UPSTREAM_PORT/" config/demo.toml >"$CFG"

# A store kept from an older keygate is moved to this one's layout (nothing to do otherwise).
"$KG" migrate --config "$CFG" >/dev/null

# The demo's org, once; a kept store already has it.
store() { "$KG" "$@" --config "$CFG"; }
if ! store orgs list | grep -q '^demo '; then
  store orgs create demo --name "Demo org" >/dev/null
  store users create --org demo --id alice --name "Alice" >/dev/null
  store users create --org demo --id ada --name "Ada" --role admin >/dev/null
  store projects create --org demo my-model >/dev/null
  store projects add-member --org demo my-model alice >/dev/null
fi
KEY=$(store keys create --user alice --name "demo key" --scopes inference --expires-in 7d 2>/dev/null)
MANAGE_KEY=$(store keys create --user ada --name "demo management key" --scopes all --expires-in 7d 2>/dev/null)

"$KG" serve --config "$CFG" &
PIDS+=($!)
KG_PID=$!

cat <<MSG

keygate is starting on http://127.0.0.1:$KEYGATE_PORT (management and ops: http://127.0.0.1:$ADMIN_PORT)
A key for alice, project my-model, scope inference (shown once):

  curl -i -X POST http://127.0.0.1:$KEYGATE_PORT/v1/projects/my-model/predict -H 'apikey: $KEY' -F 'file=@README.md'

Without a key:  curl -i http://127.0.0.1:$KEYGATE_PORT/v1/projects/my-model/predict

To manage keys as ada, the demo org's admin (README "After the demo"), in another shell:

  export PATH="$(dirname "$KG"):\$PATH"
  export KEYGATE_URL=http://127.0.0.1:$ADMIN_PORT KEYGATE_API_KEY=$MANAGE_KEY
  keygate keys list

Or in a browser: http://127.0.0.1:$ADMIN_PORT/console, signed in with ada's key ($MANAGE_KEY).

Ctrl-C stops keygate, the demo upstream and Redis (the store is kept; RESET=1 starts afresh).

MSG
wait "$KG_PID"
