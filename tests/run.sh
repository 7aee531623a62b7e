#!/usr/bin/env bash
# The test command (README "Test it"): installs what the tests need, then runs every check CI runs.
#   bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The integration tests start their own redis-server (redis-cli makes a Cluster of them; redis-server
# --sentinel runs the sentinels) on free loopback ports, and the console's test drives a headless
# Chromium through chromedriver.
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${need[*]} from Debian's packages" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The Debian package starts a system Redis on 6379; the tests never use it.

rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
log=$(mktemp)
cargo test --all-targets 2>&1 | tee "$log"
# The deploy kit, checked statically (installs hadolint, kubernetes-validate, promtool if missing).
bash deploy/check.sh target/debug/keygate
# The benchmark harness, in smoke mode (a few seconds; installs wrk, nginx, gnuplot if missing).
bash loadtests/run.sh --smoke
python3 loadtests/ab.py --smoke target/debug/keygate target/debug/keygate

# One closing line with the totals of every cargo test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
