#!/usr/bin/env bash
# Tenant provisioning latency through a real `kl server` (release build, fresh SQLite data
# dir, random port), in one run on this machine:
#   - API: N sequential `POST /v1/tenants` with curl (admin token, a spec with quotas), the
#     latency being curl's time_total (connect + request + the server's answer);
#   - CLI: N sequential `kl tenant create NAME --functions 10`, as wall time of the process.
# Every creation must answer 201 / succeed. Prints p50, p99 and max in ms; writes nothing.
# Usage: bench/tenant_provision.sh [N]   (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
source bench/lib.sh
start_server

# p50, p99 and max (nearest rank) of the ms figures in file $1.
stats() {
  sort -n "$1" | awk '{ v[NR] = $1 } END {
    p50 = v[int(NR * 0.50 + 0.999999)]; p99 = v[int(NR * 0.99 + 0.999999)];
    printf "p50 %.2f ms, p99 %.2f ms, max %.2f ms (n=%d)\n", p50, p99, v[NR], NR }'
}

: >"$work/api.ms"
for i in $(seq "$n"); do
  out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' \
    -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    -d "{\"name\":\"api-$i\",\"spec\":{\"quotas\":{\"functions\":10,\"concurrentBuilds\":2}}}" \
    "$KL_URL/v1/tenants")
  [[ ${out%% *} == 201 ]] || { echo "POST /v1/tenants api-$i answered ${out%% *}" >&2; exit 1; }
  awk -v s="${out#* }" 'BEGIN { printf "%.3f\n", s * 1000 }' >>"$work/api.ms"
done

: >"$work/cli.ms"
for i in $(seq "$n"); do
  t0=$(date +%s%N)
  "$kl" tenant create "cli-$i" --functions 10 >/dev/null
  t1=$(date +%s%N)
  awk -v d=$((t1 - t0)) 'BEGIN { printf "%.3f\n", d / 1e6 }' >>"$work/cli.ms"
done

count=$(curl -sf -H "Authorization: Bearer $token" "$KL_URL/v1/tenants" | grep -o '"name"' | wc -l)
echo "Tenant provisioning — $(date -u +%Y-%m-%d) — $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "Command: bench/tenant_provision.sh $n (release build, fresh data dir; $count tenants at the end)"
echo "  POST /v1/tenants (curl):     $(stats "$work/api.ms")"
echo "  kl tenant create (process):  $(stats "$work/cli.ms")"
