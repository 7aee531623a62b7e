#!/usr/bin/env bash
# One command from a fresh clone to a running gateway in front of a demo upstream:
#   bash deploy/local/demo.sh
# Installs redis-server from Debian's packages if missing, builds keygate (release), starts a
# private Redis and the demo upstream, creates an org, user, project and key, prints a working
# curl, and runs keygate in the foreground. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=deploy/local/run   # a fresh demo each time: its Redis data lives here
rm -rf "$RUN" && mkdir -p "$RUN"

if ! command -v redis-server >/dev/null 2>&1; then
  echo "==> installing redis-server (Debian package)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

echo "==> building keygate (release)"
cargo build --release --quiet
KG=target/release/keygate

REDIS_PORT=${REDIS_PORT:-6399}
for port in 8080 9090 9000 "$REDIS_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use; the demo needs 8080, 9090, 9000 and $REDIS_PORT (set REDIS_PORT=...) free" >&2
    exit 1
  fi
done

# A private Redis, persisting to deploy/local/run (AOF on, as in production).
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$PWD/$RUN" --appendonly yes --save "" >"$RUN/redis.log" 2>&1 &
REDIS_PID=$!
"$KG" demo-upstream --echo --listen 127.0.0.1:9000 2>"$RUN/upstream.log" &
UPSTREAM_PID=$!
cleanup() { kill "$UPSTREAM_PID" "$REDIS_PID" 2>/dev/null || true; }
trap cleanup EXIT
export KEYGATE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

CFG=config/demo.toml
admin() { "$KG" admin --config "$CFG" "$@"; }
admin org create demo --name "Demo org" >/dev/null
admin user create --org demo --id alice --name "Alice" >/dev/null
admin project create --org demo my-model >/dev/null
admin project add-member --org demo my-model alice >/dev/null
KEY=$(admin key create --user alice --name "demo key" --scopes inference --expires-in 7d 2>/dev/null)

cat <<MSG

keygate is starting on http://127.0.0.1:8080 (ops: http://127.0.0.1:9090/metrics)
A key for alice, project my-model, scope inference (shown once):

  curl -i -X POST http://127.0.0.1:8080/v1/projects/my-model/predict -H 'apikey: $KEY' -F 'file=@README.md'

Without a key:     curl -i http://127.0.0.1:8080/v1/projects/my-model/predict
Manage keys:       KEYGATE_REDIS_URL=$KEYGATE_REDIS_URL $KG admin --config $CFG key list --org demo
Ctrl-C stops keygate, the demo upstream and Redis.

MSG
"$KG" serve --config "$CFG"
