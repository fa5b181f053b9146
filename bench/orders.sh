#!/usr/bin/env bash
# The order pipeline under load: the whole shop (root spin.toml) on a fresh
# database and RabbitMQ vhost.
#
# 1. Sustained: wrk POST /orders at 32 connections for DURATION while the
#    payment pipeline runs (requests/s, p50, p99), then how long the
#    pipeline took to make every accepted order final after wrk stopped.
# 2. Burst: 1,000 orders from 32 clients (bench/order-burst), and the time
#    from the last 201 until all of them are paid or cancelled.
#
#   bench/orders.sh
#   DURATION=30s ORDERS=5000 bench/orders.sh
#   PGSOCKET=/var/run/postgresql bench/orders.sh   # Postgres over its Unix socket
#
# Postgres is reached over TCP loopback, as `trellis up` does by default, or
# over its Unix socket when PGSOCKET names the socket's directory.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

DURATION=${DURATION:-10s}
ORDERS=${ORDERS:-1000}
CLIENTS=${CLIENTS:-32}
PORT=${PORT:-3813}
DB=${DB:-trellis_bench_orders}
VHOST=${VHOST:-trellis_bench_orders}
PGSOCKET=${PGSOCKET:-}
if [ -n "$PGSOCKET" ] && [ -S "$PGSOCKET/.s.PGSQL.5432" ]; then
  ADMIN_URL="postgres://postgres@localhost/$DB?host=$PGSOCKET"
else
  ADMIN_URL="postgres://postgres@127.0.0.1:5432/$DB"
fi

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release -p trellis -p order-burst
cargo build --release --target wasm32-wasip2 -p user -p order -p payment -p hello

fresh_services

target/release/trellis up -f spin.toml --listen "127.0.0.1:$PORT" \
  --database-url "$ADMIN_URL" --amqp-url "amqp://guest:guest@127.0.0.1:5672/$VHOST" \
  --cache-dir "$work/cache" >"$work/trellis.out" 2>"$work/trellis.err" &
pids+=($!)
wait_for "http://127.0.0.1:$PORT/health/ready"

curl -fsS -o /dev/null -X POST "http://127.0.0.1:$PORT/users" \
  --data '{"email":"wrk@example.com","name":"Load"}'
cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"user_id":1,"product_name":"load","amount":1500}'
wrk.headers["Content-Type"] = "application/json"
LUA

# Milliseconds of CPU per order between two snapshots, for `orders` orders.
cpu_per_order() {
  local hz; hz=$(getconf CLK_TCK)
  read -r t0 p0 r0 a0 <<<"$1"; read -r t1 p1 r1 a1 <<<"$2"
  awk -v hz="$hz" -v n="$3" -v t=$((t1 - t0)) -v p=$((p1 - p0)) -v r=$((r1 - r0)) -v a=$((a1 - a0)) \
    'BEGIN { f = 1000 / hz / n; printf "trellis %.2f, postgres %.2f, rabbitmq %.2f, whole machine %.2f\n", t * f, p * f, r * f, a * f }'
}

pending() {
  psql -qtA -h 127.0.0.1 -U postgres -d "$DB" -c \
    "SELECT count(*) FROM t_shop_order_orders.orders WHERE status = 'pending'"
}
# Milliseconds until no order is pending.
drain_ms() {
  local start; start=$(date +%s%N)
  for _ in $(seq 1 6000); do
    [ "$(pending)" = 0 ] && { echo $(( ($(date +%s%N) - start) / 1000000 )); return; }
    sleep 0.02
  done
  echo "orders still pending after 120 s" >&2; exit 1
}

wrk -t1 -c"$CLIENTS" -d2s -s "$work/post.lua" "http://127.0.0.1:$PORT/orders" >/dev/null
drain_ms >/dev/null

echo
echo "database: $ADMIN_URL"
echo "POST /orders, wrk -t1 -c$CLIENTS, $DURATION, payment pipeline running"
before=$(cpu_snapshot)
raw=$(wrk -t1 -c"$CLIENTS" -d"$DURATION" --latency -s "$work/post.lua" "http://127.0.0.1:$PORT/orders")
out=$(parse <<<"$raw")
read -r rps p50 p99 <<<"$out"
accepted=$(awk '/requests in/ {print $1}' <<<"$raw")
lag=$(drain_ms)
after=$(cpu_snapshot)
printf '%-28s %s\n' "accepted requests/s" "$rps   (target >= 1000)" \
  "p50 / p99" "$p50 / $p99" \
  "all final after wrk stopped" "${lag} ms" \
  "CPU ms per order" "$(cpu_per_order "$before" "$after" "$accepted")  ($(nproc) cores)"
paid=$(psql -qtA -h 127.0.0.1 -U postgres -d "$DB" -c "SELECT count(*) FROM t_shop_order_orders.orders WHERE status = 'paid'")
payments=$(psql -qtA -h 127.0.0.1 -U postgres -d "$DB" -c "SELECT count(*) FROM t_shop_payment_payments.payments")
printf '%-28s %s\n' "orders paid / payments" "$paid / $payments"

echo
echo "burst: $ORDERS orders from $CLIENTS clients"
target/release/order-burst "http://127.0.0.1:$PORT" "$ORDERS" "$CLIENTS"
echo "(target: all final within 2000 ms of the last 201)"
