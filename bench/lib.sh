# Shared by the benchmarks (source it): a release `kl server` on a fresh data dir and a random
# port, stopped and cleaned up on exit. Uses $work if already set (e.g. for caches the server
# must see), else a new temporary folder. Sets kl, work, server, KL_URL, KL_DATA_DIR, token.
# Extra arguments go to `kl server`.
start_server() {
  cargo build --release --locked -p kl >/dev/null
  kl=$PWD/target/release/kl
  work=${work:-$(mktemp -d)}
  local port=$((20000 + RANDOM % 20000))
  "$kl" server --data-dir "$work/data" --listen "127.0.0.1:$port" "$@" >"$work/server.log" 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
  export KL_URL=http://127.0.0.1:$port KL_DATA_DIR=$work/data
  for _ in $(seq 100); do curl -sf "$KL_URL/healthz" >/dev/null && break; sleep 0.1; done
  curl -sf "$KL_URL/healthz" >/dev/null || { echo "the server did not start:" >&2; cat "$work/server.log" >&2; exit 1; }
  token=$(cat "$work/data/admin.token")
}

# A wrk script posting {"name":"bench"} as JSON with the admin token, written to $work/post.lua.
write_post_lua() {
  cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"name":"bench"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
LUA
}
