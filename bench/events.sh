#!/usr/bin/env bash
# Eventing, both brokers side by side in one run (the embedded one in SQLite, and RabbitMQ):
#   - accepted events/s: bench/events-load POSTs N binary-mode events, each with a unique id,
#     from C connections as fast as the server answers 202 (accepted = persisted);
#   - delivered events/s: N / (first send -> last receive) for that same burst, the receive
#     time logged by a trivial Go function (bench/events-fn) behind a trigger;
#   - the same with N events in batches of 100, which the ingress may take faster than they
#     can be delivered: delivered events/s below accepted events/s is the dispatcher's own
#     rate, from a backlog;
#   - end-to-end latency p50/p99: at a steady RATE events/s (below both brokers' capacity),
#     the function's receive time minus the event's `time`, which the sender sets when it
#     sends (one machine, one clock).
# Must run as root (functions run sandboxed). Needs go (the function and the load generator)
# and python3 (the arithmetic). RabbitMQ: KL_BENCH_AMQP_URL, else KL_TEST_AMQP_URL, else
# amqp://guest:guest@127.0.0.1:5672/%2f. Writes a dated section to bench/RESULTS.md.
# Usage: bench/events.sh [N] [CONNECTIONS] [RATE] [LATENCY_EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
cmdline="bench/events.sh${*:+ $*}"
n=${1:-5000}
conns=${2:-16}
rate=${3:-200}
lat_n=${4:-2000}
amqp=${KL_BENCH_AMQP_URL:-${KL_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}}

[ "$(id -u)" = 0 ] || { echo "run as root (functions run sandboxed)" >&2; exit 1; }
command -v go >/dev/null || { echo "go is needed" >&2; exit 1; }

source bench/lib.sh
root=$(mktemp -d)
cleanup() {
  [ -n "${server:-}" ] && { kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; }
  rm -rf "$root"
  return 0
}
trap cleanup EXIT
(cd bench/events-load && go build -o "$root/eventsload" .)

# Prints "unique total" RECV lines of the sink's log whose id starts with $1.
received() {
  local log=$work/data/logs/default/sink.log
  [ -f "$log" ] || { echo "0 0"; return; }
  grep -o "RECV $1-[0-9]* " "$log" | awk '{ t++; u[$2] = 1 } END { print length(u) + 0, t + 0 }'
}

# Waits until every event with id prefix $1 (count $2) was received, for at most 300 s.
await() {
  local deadline=$((SECONDS + 300))
  while :; do
    read -r unique _ < <(received "$1")
    [ "$unique" -ge "$2" ] && return 0
    [ $SECONDS -ge $deadline ] && { echo "only $unique of $2 $1 events arrived" >&2; exit 1; }
    sleep 0.2
  done
}

# The figures of one broker: one line of JSON on stdout. (Not run in a subshell: its EXIT
# trap would clean up everything.)
run() { # bus-label kl-server-args...
  local label=$1
  shift
  work=$(mktemp -d -p "$root")
  start_server "$@"
  trap cleanup EXIT
  "$kl" deploy bench/events-fn --name sink >/dev/null
  "$kl" trigger create bench --function sink --filter type=bench.event --retries 3 >/dev/null
  local ingress=$KL_URL/v1/tenants/default/events
  # Warm-up: instances started, connections open.
  "$root/eventsload" -url "$ingress" -token "$token" -n 200 -c 4 -prefix warm >/dev/null
  await warm 200
  local burst batched steady
  burst=$("$root/eventsload" -url "$ingress" -token "$token" -n "$n" -c "$conns" -prefix tp)
  await tp "$n"
  batched=$("$root/eventsload" -url "$ingress" -token "$token" -n "$n" -c 4 -batch 100 -prefix bp)
  await bp "$n"
  steady=$("$root/eventsload" -url "$ingress" -token "$token" -n "$lat_n" -c 4 -rate "$rate" -prefix lat)
  await lat "$lat_n"
  local total=0 each
  for phase in tp bp lat; do
    read -r _ each < <(received $phase)
    total=$((total + each))
  done
  python3 - "$label" "$work/data/logs/default/sink.log" "$burst" "$batched" "$steady" "$total" <<'PY'
import datetime, json, sys
label, log, burst, batched, steady, total = sys.argv[1:]
burst, batched, steady = json.loads(burst), json.loads(batched), json.loads(steady)
recv = {}
for line in open(log):
    parts = line.split()
    if "RECV" not in parts:
        continue
    i = parts.index("RECV")
    ident, sent, got = parts[i + 1], parts[i + 2], int(parts[i + 3])
    recv.setdefault(ident, (sent, got))
def micros(t):  # RFC 3339 in UTC with up to nanoseconds, as Go's RFC3339Nano writes it
    base, _, frac = t.rstrip("Z").partition(".")
    whole = datetime.datetime.fromisoformat(base).replace(tzinfo=datetime.timezone.utc)
    return int(whole.timestamp()) * 1_000_000 + int((frac + "000000")[:6])
def delivered_per_second(phase, sent):
    got = [g for ident, (_, g) in recv.items() if ident.startswith(phase + "-")]
    return round(len(got) / ((max(got) - sent["startMicros"]) / 1e6), 1)
unique = sum(1 for ident in recv if ident.split("-")[0] in ("tp", "bp", "lat"))
lat = sorted((got - micros(sent)) / 1000 for ident, (sent, got) in recv.items() if ident.startswith("lat-"))
pct = lambda p: lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))]
print(json.dumps({
    "bus": label,
    "failed": burst["failed"] + batched["failed"] + steady["failed"],
    "acceptedPerSecond": round(burst["acceptedPerSecond"], 1),
    "deliveredPerSecond": delivered_per_second("tp", burst),
    "batchAcceptedPerSecond": round(batched["acceptedPerSecond"], 1),
    "batchDeliveredPerSecond": delivered_per_second("bp", batched),
    "redelivered": int(total) - unique,
    "steadyRate": round(steady["acceptedPerSecond"], 1),
    "p50": round(pct(50), 2), "p99": round(pct(99), 2), "max": round(lat[-1], 2),
}))
PY
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true
  server=
}

prefix=klbench-$$
run embedded >"$root/embedded.json"
run rabbitmq --bus "$amqp" --bus-prefix "$prefix" >"$root/rabbitmq.json"
embedded=$(cat "$root/embedded.json")
rabbit=$(cat "$root/rabbitmq.json")
if command -v rabbitmqctl >/dev/null; then
  rabbitmqctl -q list_queues name | grep "^$prefix\." | xargs -r -n1 rabbitmqctl -q delete_queue >/dev/null || true
fi

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
table=$(python3 - "$embedded" "$rabbit" <<'PY'
import json, sys
rows = [json.loads(a) for a in sys.argv[1:]]
print("| broker | accepted/s, 1 per request | delivered/s | accepted/s, batches of 100 | delivered/s, batches | e2e p50 ms | e2e p99 ms | e2e max ms | steady rate | failed | redelivered |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['bus']} | {r['acceptedPerSecond']} | {r['deliveredPerSecond']} | {r['batchAcceptedPerSecond']} | {r['batchDeliveredPerSecond']} | {r['p50']} | {r['p99']} | {r['max']} | {r['steadyRate']}/s | {r['failed']} | {r['redelivered']} |")
PY
)
echo "$table"
{
  echo
  echo "## Eventing: embedded broker vs RabbitMQ ($(date -u +%Y-%m-%d))"
  echo
  echo "Machine: $(nproc) cores ($cpu), $(free -g | awk '/Mem:/ {print $2}') GiB; RabbitMQ $(rabbitmqctl -q version 2>/dev/null || echo '?'); release build, sandboxed Go function; load generator on the same cores. Command: \`$cmdline\`."
  echo
  echo "Burst: $n binary-mode events from $conns connections as fast as accepted (202 = persisted); delivered/s = $n / (first send → last receive). Batches: $n events in batches of 100 from 4 connections; where delivered/s is below accepted/s a backlog formed and it is the dispatcher's own rate, elsewhere delivery kept up with acceptance. Latency: $lat_n events at $rate/s from 4 connections; receive time (function) − event time (set at send)."
  echo
  echo "$table"
} >>bench/RESULTS.md
