#!/usr/bin/env bash
# Backup and restore of a platform with N functions (RTO), and what the default schedule can
# lose (RPO), with the real `kl` (release build) on this machine:
#   - N tiny Python functions deployed in tenant `bench` (4 deploys at a time, 2 builds), each built;
#   - `kl admin backup` while the server runs: duration, bytes; then a second one (only the
#     metadata changes: what an hourly backup costs);
#   - the data dir destroyed; `kl admin restore` onto a fresh one (the secrets key copied apart);
#   - `kl server` on it until /healthz answers, then the first invocation (a cold start).
# RTO = restore + server start + first invocation. RPO with `--backup-every 1h` (the default)
# = 1 h + one backup's duration. Writes nothing; prints the figures.
# Usage: bench/backup.sh [N]   (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
source bench/lib.sh
start_server --isolation none --build-concurrency 2 --idle-timeout 2s
# On failure, say what the server said.
trap 'status=$?; if [[ $status != 0 ]]; then tail -30 "$work"/server*.log >&2; fi; kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT

ms() { echo $(( ($2 - $1) / 1000000 )); }

mkdir -p "$work/fn"
cat >"$work/fn/main.py" <<'PY'
def handler(event, context):
    return {"ok": True}
PY
# Each deploy starts an instance for its readiness check: room for those until they idle out.
cat >"$work/tenant.yaml" <<YAML
quotas: {functions: $((n + 10)), instances: 500, cpu: "64", memory: 64Gi, concurrentBuilds: 4}
YAML
"$kl" tenant create bench -f "$work/tenant.yaml" >/dev/null

t0=$(date +%s%N)
seq "$n" | xargs -P 4 -I{} sh -c '"$0" deploy "$1" --tenant bench --name "fn-$2" --cpu 50m --memory 64Mi >/dev/null || { echo "deploy fn-$2 failed" >&2; exit 255; }' "$kl" "$work/fn" {}
t1=$(date +%s%N)
deployed=$("$kl" ls --tenant bench -o json | jq ".functions | length")
[[ $deployed == "$n" ]] || { echo "expected $n functions, found $deployed" >&2; exit 1; }

first=$("$kl" admin backup --to "$work/backups" -o json)
second=$("$kl" admin backup --to "$work/backups" -o json)
cp "$work/data/secrets.key" "$work/secrets.key"
kill "$server"; wait "$server" 2>/dev/null || true
rm -rf "$work/data"
mkdir -p "$work/data" && install -m 0600 "$work/secrets.key" "$work/data/secrets.key"

t2=$(date +%s%N)
"$kl" admin restore --from "$work/backups" --data-dir "$work/data" >"$work/restore.log" 2>&1
t3=$(date +%s%N)
port=$((20000 + RANDOM % 20000))
"$kl" server --data-dir "$work/data" --listen "127.0.0.1:$port" --isolation none >"$work/server2.log" 2>&1 &
server=$!
until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do
  kill -0 "$server" || { cat "$work/server2.log" >&2; exit 1; }
  sleep 0.01
done
t4=$(date +%s%N)
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$work/data/admin.token")" \
  -H 'content-type: application/json' -d '{}' "http://127.0.0.1:$port/fn/bench/fn-$n")
t5=$(date +%s%N)
[[ $status == 200 ]] || { echo "the restored fn-$n answered $status" >&2; exit 1; }

field() { jq -r ".$2" <<<"$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "Backup and restore — $(date -u +%Y-%m-%d) — $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "Command: bench/backup.sh $n (release build, SQLite + local objects, --isolation none)"
echo "  deploy $n functions (4 at a time):   $(ms "$t0" "$t1") ms"
echo "  backup, first:   $(field "$first" durationMs) ms, $(field "$first" rows) rows, $(field "$first" objects) objects, $(field "$first" artifacts) artifacts, $(mib "$(field "$first" bytesWritten)") written"
echo "  backup, again:   $(field "$second" durationMs) ms, $(mib "$(field "$second" bytesWritten)") written"
echo "  restore:         $(ms "$t2" "$t3") ms ($(tail -1 "$work/restore.log" | cut -c1-80)…)"
echo "  server start:    $(ms "$t3" "$t4") ms (to /healthz)"
echo "  first invoke:    $(ms "$t4" "$t5") ms (cold start of fn-$n)"
echo "  RTO (restore + start + first invoke): $(ms "$t2" "$t5") ms"
echo "  RPO with the default schedule (--backup-every 1h): at most 1 h + $(field "$first" durationMs) ms of changes"
