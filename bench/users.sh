#!/usr/bin/env bash
# Database benchmark: GET /users/{id} through trellis (user component, managed
# database) vs a native axum + sqlx server running the same query on the same
# table, both against the local Postgres.
#
#   bench/users.sh                # 10 s per run
#   DURATION=30s bench/users.sh
#   TRELLIS_BIN=/tmp/trellis-old bench/users.sh   # another build of trellis
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

DURATION=${DURATION:-10s}
USERS=${USERS:-1000}
TRELLIS_PORT=${TRELLIS_PORT:-3811}
NATIVE_PORT=${NATIVE_PORT:-3812}
DB=${DB:-trellis_bench_users}
ADMIN_URL="postgres://postgres@127.0.0.1:5432/$DB"

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
TRELLIS_BIN=${TRELLIS_BIN:-target/release/trellis}
cargo build --release -p trellis -p native-users
cargo build --release --target wasm32-wasip2 -p user

work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null

user_app


"$TRELLIS_BIN" up -f "$work/spin.toml" --listen "127.0.0.1:$TRELLIS_PORT" \
  --database-url "$ADMIN_URL" --cache-dir "$work/cache" >"$work/trellis.out" 2>"$work/trellis.err" &
pids+=($!)
wait_for "http://127.0.0.1:$TRELLIS_PORT/health"

seed_users "http://127.0.0.1:$TRELLIS_PORT"

schema=$(psql -qtA -h 127.0.0.1 -U postgres -d "$DB" -c \
  "SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_bench\\_user\\_users%' LIMIT 1")
target/release/native-users "127.0.0.1:$NATIVE_PORT" "$ADMIN_URL" "$schema" >"$work/native.out" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$NATIVE_PORT/users/1"

# Each request asks for a random existing user.
cat > "$work/random.lua" <<LUA
math.randomseed(os.time())
request = function() return wrk.format("GET", "/users/" .. math.random(1, $USERS)) end
LUA

run() { # port
  wrk -t1 -c32 -d2s -s "$work/random.lua" "http://127.0.0.1:$1" >/dev/null
  wrk -t1 -c32 -d"$DURATION" --latency -s "$work/random.lua" "http://127.0.0.1:$1" | parse
}

echo
echo "GET /users/{id}, $USERS users, wrk -t1 -c32, $DURATION per run"
printf '%-12s %12s %12s %12s\n' server requests/s p50 p99
out=$(run "$TRELLIS_PORT"); read -r t_rps t_p50 t_p99 <<<"$out"
printf '%-12s %12s %12s %12s\n' trellis "$t_rps" "$t_p50" "$t_p99"
out=$(run "$NATIVE_PORT"); read -r n_rps n_p50 n_p99 <<<"$out"
printf '%-12s %12s %12s %12s\n' native "$n_rps" "$n_p50" "$n_p99"
awk -v a="$t_rps" -v b="$n_rps" 'BEGIN { printf "\nthroughput ratio trellis/native: %.2fx   (target >= 0.5x)\n", a / b }'
