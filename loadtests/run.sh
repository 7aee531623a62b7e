#!/usr/bin/env bash
# One command for the benchmarks (see loadtests/README.md):
#   bash loadtests/run.sh             # full run: records it in loadtests/RESULTS.md, draws latency.png
#   bash loadtests/run.sh --smoke     # a few seconds with the debug build: checks the harness works
# Installs what it needs from Debian's packages (wrk, nginx, gnuplot, redis-server, h2load, openssl).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v gnuplot >/dev/null 2>&1 || need+=(gnuplot-nox)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
if [ ${#need[@]} -gt 0 ]; then
  echo "loadtests: installing ${need[*]} from Debian's packages" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

if [[ " $* " == *" --smoke "* ]]; then
  cargo build --quiet --bin keygate --example floor
  exec python3 loadtests/bench.py --bin target/debug/keygate "$@"
fi
cargo build --release --quiet --bin keygate --example floor
exec python3 loadtests/bench.py "$@"
