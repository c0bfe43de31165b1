#!/usr/bin/env bash
# The platform's overhead, in one run on this machine:
#   (a) warm invoke req/s, p50, p99 per function (go, python, node hellos), with one load
#       generator (oha, 8 connections, POST JSON) three ways: through the kl gateway, through
#       nginx proxying to the same instance's unix socket, and to that socket directly.
#       Goals: gateway req/s >= 90 % of nginx's; gateway p99 - direct p99 <= 1 ms.
#   (b) cold start p50/p95 per language (kl server --idle-timeout 1s: wait for zero instances,
#       time one invoke, N times) against the bare interpreter / binary start (hyperfine);
#       with the sandbox (default isolation) and with --isolation none.
#   (c) burst: 100 concurrent requests from zero to python-hello with --concurrency 1
#       --max-scale 100; successes, errors, time until all answered, most instances running
#       (kl_instances from /metrics) overall and within the first 5 s.
# Installs oha (cargo install), nginx-light and hyperfine (apt) when missing. Must run as root
# (the sandbox). Writes a dated section to bench/RESULTS.md.
# Usage: bench/harness.sh [seconds-per-load-run] [cold-start-runs] [burst-requests]
set -euo pipefail
cd "$(dirname "$0")/.."
cmdline="bench/harness.sh${*:+ $*}"
secs=${1:-10}
runs=${2:-10}
burst=${3:-100}
conns=8
body='{"name":"bench"}'

[ "$(id -u)" = 0 ] || { echo "run as root (the sandboxed legs need it)" >&2; exit 1; }
export PATH=$HOME/.cargo/bin:$PATH
command -v oha >/dev/null || cargo install oha --locked
pkgs=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || pkgs+=(nginx-light)
command -v hyperfine >/dev/null || pkgs+=(hyperfine)
command -v jq >/dev/null || pkgs+=(jq)
if [ ${#pkgs[@]} -gt 0 ]; then apt-get update -qq && apt-get install -y -qq "${pkgs[@]}" >/dev/null; fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

source bench/lib.sh
root=$(mktemp -d)
nginx_pid=
cleanup() {
  [ -n "$nginx_pid" ] && { kill "$nginx_pid" 2>/dev/null; wait "$nginx_pid" 2>/dev/null; }
  [ -n "${server:-}" ] && { kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; }
  rm -rf "$root"
  return 0
}
# A server per leg, each on its own data dir under $root (start_server's own trap is replaced).
start() { # kl server arguments
  work=$(mktemp -d -p "$root")
  start_server "$@"
  trap cleanup EXIT
}
stop() {
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true
  server=
}

ms() { date +%s%3N; }
describe() { "$kl" describe "$1" -o json; }
ninstances() { describe "$1" | jq '.instances | length'; }
invoke() { # name -> "http_code time_total cold?"
  local h=$work/headers.txt code t
  read -r code t < <(curl -s -o /dev/null -D "$h" -w '%{http_code} %{time_total}\n' -X POST \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "$body" \
    "$KL_URL/fn/default/$1")
  if grep -qi '^x-kl-cold-start: *true' "$h"; then echo "$code $t cold"; else echo "$code $t warm"; fi
}
pct() { # p (0-100) of the numbers on stdin, nearest rank
  sort -g | awk -v p="$1" '{v[NR]=$1} END{if (NR==0) {print "n/a"; exit} i=int((p*NR+99)/100); if (i<1) i=1; print v[i]}'
}

# ---------------------------------------------------------------- (a) warm, three legs
# oha -> "req/s|p50 ms|p99 ms|non-2xx or errors"
load() { # oha arguments...
  local out=$root/oha.json
  oha --no-tui --output-format json -c "$conns" -z "${secs}s" -m POST -T application/json -d "$body" \
    "$@" >"$out"
  jq -r '[ (.summary.requestsPerSec*10|round/10),
           (.latencyPercentiles.p50*1000000|round/1000),
           (.latencyPercentiles.p99*1000000|round/1000),
           ((([.statusCodeDistribution | to_entries[] | select(.key|startswith("2")|not) | .value] | add) // 0)
            + (([.errorDistribution | to_entries[] | select(.key != "aborted due to deadline") | .value] | add) // 0)) ] | map(tostring) | join("|")' "$out"
}
warmup() { oha --no-tui -c "$conns" -z 2s -m POST -T application/json -d "$body" "$@" >/dev/null; }

start --isolation none
warm_rows=()
warm_fn() { # dir name
  local dir=$1 name=$2 id sock port gw ng di
  # One instance taking all 8 connections at once: the gateway then proxies to the same single
  # instance that nginx and the direct leg reach, with no queueing or scaling of its own.
  "$kl" deploy "$dir" --name "$name" --max-scale 1 --concurrency "$conns" >/dev/null
  invoke "$name" >/dev/null
  id=$(describe "$name" | jq -r '.instances[0].id')
  sock=$work/data/run/$id.sock
  [ -S "$sock" ] || { echo "no socket for $name at $sock; run dir holds:" >&2; ls -la "$work/data/run" >&2; exit 1; }
  port=$((20000 + RANDOM % 20000))
  mkdir -p "$root/nginx-$name"
  sed -e "s|@DIR@|$root/nginx-$name|g" -e "s|@PORT@|$port|g" -e "s|@SOCKET@|$sock|g" \
    bench/nginx.conf.tmpl >"$root/nginx-$name/nginx.conf"
  "$nginx_bin" -c "$root/nginx-$name/nginx.conf" -e "$root/nginx-$name/error.log" &
  nginx_pid=$!
  for _ in $(seq 50); do curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$port/" && break; sleep 0.1; done
  local gw_args=(-H "Authorization: Bearer $token" "$KL_URL/fn/default/$name")
  local ng_args=("http://127.0.0.1:$port/")
  local di_args=(-H 'x-kl-request-id: bench' -H 'x-kl-deadline-ms: 9999999999999' --unix-socket "$sock" "http://function/")
  warmup "${gw_args[@]}"; gw=$(load "${gw_args[@]}")
  warmup "${ng_args[@]}"; ng=$(load "${ng_args[@]}")
  warmup "${di_args[@]}"; di=$(load "${di_args[@]}")
  kill "$nginx_pid"; wait "$nginx_pid" 2>/dev/null || true; nginx_pid=
  local ratio added
  ratio=$(awk -v a="$(cut -d'|' -f1 <<<"$gw")" -v b="$(cut -d'|' -f1 <<<"$ng")" 'BEGIN{printf "%.0f %%", 100*a/b}')
  added=$(awk -v a="$(cut -d'|' -f3 <<<"$gw")" -v b="$(cut -d'|' -f3 <<<"$di")" 'BEGIN{printf "%+.3f ms", a-b}')
  warm_rows+=("| $name | gateway | ${gw//|/ | } | $ratio of nginx (goal ≥ 90 %) | $added over direct (goal ≤ +1 ms) |")
  warm_rows+=("| $name | nginx | ${ng//|/ | } | | |")
  warm_rows+=("| $name | direct (unix socket) | ${di//|/ | } | | |")
}
warm_fn examples/go-hello hello-go
warm_fn examples/python-hello hello-python
warm_fn examples/node-hello hello-node
stop

# ---------------------------------------------------------------- (b) cold start
py=$(python3 -c 'import sys; print(sys.executable)')
nodebin=$(node -p process.execPath)
mkdir -p "$root/bare-go"
printf 'module bare\n\ngo 1.21\n' >"$root/bare-go/go.mod"
printf 'package main\n\nfunc main() {}\n' >"$root/bare-go/main.go"
(cd "$root/bare-go" && go build -o bare .)
bare() { # label command...
  local label=$1; shift
  hyperfine -N --warmup 3 --runs "$runs" --export-json "$root/hf.json" -- "$*" >/dev/null 2>&1
  local p50 p95
  p50=$(jq -r '.results[0].times[]*1000' "$root/hf.json" | pct 50)
  p95=$(jq -r '.results[0].times[]*1000' "$root/hf.json" | pct 95)
  printf '%s|%.1f|%.1f\n' "$label" "$p50" "$p95"
}
bare_rows=()
bare_rows+=("$(bare python "$py -c pass")")
bare_rows+=("$(bare node "$nodebin -e 0")")
bare_rows+=("$(bare go "$root/bare-go/bare")")

cold_rows=()
cold_fn() { # isolation name -> appends a row
  local iso=$1 name=$2 times=() notcold=0 bad=0 r code t c
  for _ in $(seq "$runs"); do
    for _ in $(seq 300); do [ "$(ninstances "$name")" = 0 ] && break; sleep 0.1; done
    read -r code t c < <(invoke "$name")
    [ "$code" = 200 ] || bad=$((bad + 1))
    [ "$c" = cold ] || notcold=$((notcold + 1))
    times+=("$(awk -v t="$t" 'BEGIN{printf "%.1f", t*1000}')")
  done
  local p50 p95
  p50=$(printf '%s\n' "${times[@]}" | pct 50); p95=$(printf '%s\n' "${times[@]}" | pct 95)
  cold_rows+=("$iso|${name#hello-}|$p50|$p95|$((runs - notcold))/$runs|$bad|${times[*]}")
}
burst_line=
running() { # name -> instances running now, from the gateway's scrape-time gauge
  curl -s -H "Authorization: Bearer $token" "$KL_URL/metrics" |
    awk -v f="function=\"$1\"" '/^kl_instances\{/ && index($0, f) { n += $2 } END { print n + 0 }'
}
burst_leg() { # name
  local name=$1 t0 t1 ok err maxi at5
  for _ in $(seq 300); do [ "$(ninstances "$name")" = 0 ] && break; sleep 0.1; done
  mkdir -p "$root/burst"
  t0=$(ms)
  # Instances running, sampled every ~50 ms from /metrics (cheap: no CLI or jq per sample).
  ( while [ ! -e "$root/burst.done" ]; do echo "$(($(ms) - t0)) $(running "$name")"; sleep 0.05; done ) \
    >"$root/burst.samples" &
  local sampler=$! pids=()
  for i in $(seq "$burst"); do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 120 -X POST \
      -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "$body" \
      "$KL_URL/fn/default/$name" >"$root/burst/$i" 2>/dev/null &
    pids+=($!)
  done
  wait "${pids[@]}" 2>/dev/null || true
  t1=$(ms)
  touch "$root/burst.done"; wait "$sampler"
  maxi=$(awk '$2 > m { m = $2 } END { print m + 0 }' "$root/burst.samples")
  at5=$(awk '$1 <= 5000 && $2 > m { m = $2 } END { print m + 0 }' "$root/burst.samples")
  ok=$(cat "$root"/burst/* | awk '$1==200' | wc -l)
  err=$((burst - ok))
  local codes lat50 lat99
  codes=$(cat "$root"/burst/* | awk '{print $1}' | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')
  lat50=$(awk '{printf "%.0f\n", $2*1000}' "$root"/burst/* | pct 50)
  lat99=$(awk '{printf "%.0f\n", $2*1000}' "$root"/burst/* | pct 99)
  local latmax; latmax=$(awk '{printf "%.0f\n", $2*1000}' "$root"/burst/* | pct 100)
  burst_line="$burst requests at once: $ok answered 200, $err not (status codes: ${codes% }); all answered after $((t1 - t0)) ms (slowest curl: $latmax ms); per-request p50 $lat50 ms, p99 $lat99 ms; at most $maxi instances running (kl_instances from /metrics, sampled every ~50 ms), $at5 of them within the first 5 s (goal ≥ 50)."
}

cold_server() { # isolation
  start --idle-timeout 1s --isolation "$1" --capacity-cpu 64 --capacity-memory 32Gi
  "$kl" deploy examples/go-hello --name hello-go >/dev/null
  "$kl" deploy examples/python-hello --name hello-python >/dev/null
  "$kl" deploy examples/node-hello --name hello-node >/dev/null
  for f in hello-go hello-python hello-node; do invoke "$f" >/dev/null; done
  cold_fn "$1" hello-python
  cold_fn "$1" hello-node
  cold_fn "$1" hello-go
}
cold_server sandbox
stop
# (c) burst, on a sandboxed server of its own whose idle timeout (10 s) outlasts the 5 s
# window, so that instances which answered early still count; the default tenant's quotas
# raised so that they (and the node capacity) are not what limits the burst.
start --idle-timeout 10s --isolation sandbox --capacity-cpu 64 --capacity-memory 32Gi
curl -sf -X PUT -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  "$KL_URL/v1/tenants/default" \
  -d '{"quotas":{"instances":'"$burst"',"cpu":"64","memory":"32Gi"}}' >/dev/null
"$kl" deploy examples/python-hello --name burst --concurrency 1 --max-scale "$burst" --memory 128Mi --cpu 100m >/dev/null
burst_leg burst
stop
cold_server none
stop

{
  echo
  echo "## Harness — $(date -u +%Y-%m-%d) — $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo
  echo "Command: \`$cmdline\` (release build; $(oha --version), $(nginx -v 2>&1 | cut -d: -f2 | xargs), $(hyperfine --version);"
  echo "the load generator runs on the same $(nproc) cores as everything else)."
  echo
  echo "**(a) Warm invoke**, \`kl server --isolation none\`, each function deployed with \`--max-scale 1"
  echo "--concurrency $conns\`; oha $conns connections, ${secs}s after a 2 s warm-up, POST JSON; the same"
  echo "instance three ways: gateway (\`/fn/default/NAME\`), nginx (keepalive upstream to its unix"
  echo "socket) and the socket directly. Latencies in ms."
  echo
  echo "| function | leg | req/s | p50 | p99 | non-2xx + errors | throughput | added p99 |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${warm_rows[@]}"
  echo
  echo "**(b) Cold start**, \`kl server --idle-timeout 1s\`: wait until \`kl describe\` shows no"
  echo "instance, then time one invoke with curl (\`time_total\`), $runs times per function. Bare start:"
  echo "hyperfine -N, $runs runs after 3 warm-ups (\`$py -c pass\`, \`$nodebin -e 0\`, an empty Go binary)."
  echo
  echo "| isolation | language | bare p50 | bare p95 | kl cold p50 | kl cold p95 | kl p50 − bare p50 | kl p50 / bare p50 | x-kl-cold-start | non-200 |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for r in "${cold_rows[@]}"; do
    IFS='|' read -r iso lang p50 p95 seen bad _ <<<"$r"
    for b in "${bare_rows[@]}"; do
      IFS='|' read -r bl b50 b95 <<<"$b"
      [ "$bl" = "$lang" ] || continue
      echo "| $iso | $lang | $b50 | $b95 | $p50 | $p95 | $(awk -v a="$p50" -v b="$b50" 'BEGIN{printf "%+.1f", a-b}') | $(awk -v a="$p50" -v b="$b50" 'BEGIN{printf "%.2f×", a/b}') | $seen | $bad |"
    done
  done
  echo
  echo "Raw kl cold-start times (ms):"
  echo
  for r in "${cold_rows[@]}"; do
    IFS='|' read -r iso lang _ _ _ _ raw <<<"$r"
    echo "- $iso, $lang: $raw"
  done
  echo
  echo "**(c) Burst** (sandbox, \`kl server --idle-timeout 10s\`): python-hello deployed with \`--concurrency 1 --max-scale $burst --memory"
  echo "128Mi --cpu 100m\`, default tenant quotas raised to $burst instances / 64 CPU / 32Gi and node capacity"
  echo "to 64 CPU / 32Gi, from zero instances, $burst curl processes started at once: $burst_line"
} | tee -a bench/RESULTS.md
