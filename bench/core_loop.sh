#!/usr/bin/env bash
# Core-loop figures, in one run on this machine:
#   - cold build (empty kl cache, empty pip/npm/Go caches) and cached rebuild per function,
#     measured as the wall time of `kl deploy` (upload + build + readiness check);
#   - warm invoke latency p50/p99 through the gateway (wrk, 1 connection, 10 s per function).
# Writes a dated section to bench/RESULTS.md. Usage: bench/core_loop.sh [seconds-per-wrk-run]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
source bench/lib.sh
work=$(mktemp -d)
export GOCACHE=$work/gocache GOMODCACHE=$work/gomod PIP_NO_CACHE_DIR=1 npm_config_cache=$work/npm
start_server

ms() { date +%s%3N; }
rows=()
lat=()
bench_fn() { # dir name
  local dir=$1 name=$2 t0 cold warm
  t0=$(ms); "$kl" deploy "$dir" --name "$name" >/dev/null; cold=$(( $(ms) - t0 ))
  t0=$(ms); "$kl" deploy "$dir" --name "$name" --env BENCH=1 >/dev/null; warm=$(( $(ms) - t0 ))
  rows+=("| $name | $dir | ${cold} ms | ${warm} ms |")
  write_post_lua
  local out p50 p99 rps
  out=$(wrk -t1 -c1 -d"${secs}s" --latency -s "$work/post.lua" "$KL_URL/fn/default/$name")
  p50=$(awk '/^ +50%/{print $2}' <<<"$out"); p99=$(awk '/^ +99%/{print $2}' <<<"$out")
  rps=$(awk '/^Requests\/sec/{print $2}' <<<"$out")
  lat+=("| $name | $p50 | $p99 | $rps |")
}
bench_fn examples/python-hello hello-python
bench_fn examples/node-hello hello-node
bench_fn examples/go-hello hello-go
bench_fn crates/kl/tests/fixtures/py-hello py-deps
bench_fn crates/kl/tests/fixtures/node-cjs node-deps

{
  echo
  echo "## Core loop — $(date -u +%Y-%m-%d) — $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo
  echo "Command: \`bench/core_loop.sh $secs\` (release build; caches empty at the start)."
  echo
  echo "| function | source | cold build (deploy wall time) | cached rebuild |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Warm invoke through the gateway, wrk 1 thread, 1 connection, ${secs}s, POST JSON:"
  echo
  echo "| function | p50 | p99 | req/s |"
  echo "|---|---|---|---|"
  printf '%s\n' "${lat[@]}"
} | tee -a bench/RESULTS.md
