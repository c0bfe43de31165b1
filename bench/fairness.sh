#!/usr/bin/env bash
# Tenant fairness: does one tenant flooding the gateway raise another tenant's latency?
# Measures the quiet tenant's warm-invoke latency (wrk, 1 connection) three ways:
#   1. alone;
#   2. while a noisy tenant floods with N connections and no rate limit;
#   3. the same flood with the noisy tenant held to a rate limit (refused with 429).
# Reports p50/p99 and the p99 ratio against the baseline (goal: <= 1.10 with the limit).
# Writes a dated section to bench/RESULTS.md.
# Usage: bench/fairness.sh [seconds-per-run] [flood-connections] [noisy-rate-per-second]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}
rate=${3:-200}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
source bench/lib.sh
start_server
api() { curl -sf -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@" >/dev/null; }

api -X POST "$KL_URL/v1/tenants" -d '{"name":"quiet"}'
api -X POST "$KL_URL/v1/tenants" -d '{"name":"noisy","spec":{"quotas":{"instances":20}}}'
"$kl" deploy examples/go-hello --name hello --tenant quiet >/dev/null
"$kl" deploy examples/go-hello --name hello --tenant noisy --max-scale 4 >/dev/null

write_post_lua
quiet() { # label
  local out p50 p99 rps
  out=$(wrk -t1 -c1 -d"${secs}s" --latency -s "$work/post.lua" "$KL_URL/fn/quiet/hello")
  p50=$(awk '/^ +50%/{print $2}' <<<"$out"); p99=$(awk '/^ +99%/{print $2}' <<<"$out")
  rps=$(awk '/^Requests\/sec/{print $2}' <<<"$out")
  echo "$1|$p50|$p99|$rps"
}
flood() { # starts the flood in the background; its pid in $flooding
  wrk -t1 -c"$conns" -d"$((secs + 2))s" -s "$work/post.lua" "$KL_URL/fn/noisy/hello" >"$work/flood.txt" &
  flooding=$!
  sleep 1
}
to_us() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); print v} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v*1000} else {sub(/s$/,"",v); print v*1000000}}' <<<"$1"; }

results=()
results+=("$(quiet "alone")")
flood; results+=("$(quiet "noisy floods, no rate limit")"); wait "$flooding"
noisy_unlimited=$(awk '/^Requests\/sec/{print $2}' "$work/flood.txt")
api -X PUT "$KL_URL/v1/tenants/noisy" -d "{\"quotas\":{\"instances\":20},\"rateLimit\":{\"perSecond\":$rate,\"burst\":$rate}}"
flood; results+=("$(quiet "noisy floods, limited to ${rate}/s")"); wait "$flooding"
noisy_limited=$(awk '/^Requests\/sec/{print $2}' "$work/flood.txt")

base_p99=$(to_us "$(cut -d'|' -f3 <<<"${results[0]}")")
{
  echo
  echo "## Tenant fairness — $(date -u +%Y-%m-%d) — $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo
  echo "Command: \`bench/fairness.sh $secs $conns $rate\` (release build; go-hello in both tenants; the"
  echo "quiet tenant measured with wrk 1 connection while the noisy one floods with $conns connections)."
  echo
  echo "| quiet tenant, while | p50 | p99 | req/s | p99 / alone |"
  echo "|---|---|---|---|---|"
  for r in "${results[@]}"; do
    IFS='|' read -r label p50 p99 rps <<<"$r"
    ratio=$(awk -v a="$(to_us "$p99")" -v b="$base_p99" 'BEGIN{printf "%.2f", a/b}')
    echo "| $label | $p50 | $p99 | $rps | $ratio |"
  done
  echo
  echo "Noisy tenant's own throughput (all answers, 429s included): unlimited $noisy_unlimited req/s,"
  echo "limited $noisy_limited req/s."
} | tee -a bench/RESULTS.md
