#!/usr/bin/env bash
# Density under `trellis serve`: many tenants, each with the shop deployed.
#
#   bench/density.sh                 # 100 tenants
#   TENANTS=1000 bench/density.sh
#
# On a fresh platform database and RabbitMQ vhost, TENANTS tenants are
# created and each gets the shop (user, order, payment; the same bytes for
# all, so compiled once). Printed:
# - the time to deploy them all (PARALLEL CLI deploys at a time) and the
#   host's RSS before and after;
# - each tenant's first request (`GET /users?limit=1`: the user component's
#   first instance and its role's first database connection), in a random
#   order of tenants: p50/p99 from curl's total time;
# - warm requests, wrk spreading the same request over every tenant: rate
#   and p50/p99;
# - RSS after the traffic, and what the broker and Postgres hold.
# Targets: 1,000 tenants in under 2 GiB of host RSS; first-request p99
# under 20 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

TENANTS=${TENANTS:-100}
PARALLEL=${PARALLEL:-4}
DURATION=${DURATION:-10s}
PORT=${PORT:-3840}
ADMIN=${ADMIN:-3841}
DB=${DB:-trellis_bench_density}
VHOST=${VHOST:-trellis_bench_density}
ROLE_PREFIX="t_t0"
export TRELLIS_ADMIN_TOKEN=bench-density-token-0123456789
export TRELLIS_ADMIN_URL=http://127.0.0.1:$ADMIN

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release -p trellis
cargo build --release --target wasm32-wasip2 -p user -p order -p payment

# Each tenant's shop has 8 classic queues (retry delays) and 4 quorum ones;
# RabbitMQ 3.10 keeps two file handles per classic queue, and a broker that
# runs out stops answering altogether. Refuse before that.
handles=$(rabbitmqctl -q status --formatter json |
  python3 -c 'import json,sys; d = json.load(sys.stdin)["file_descriptors"]; print(d["total_limit"] - d["total_used"])')
if [ "$handles" -lt $((TENANTS * 16 + 500)) ]; then
  echo "RabbitMQ has $handles file handles left; $TENANTS tenants need about $((TENANTS * 16 + 500))." >&2
  echo "Start it with a higher limit, as .ci/run does (ulimit -n 65536)." >&2
  exit 1
fi

fresh_services
start_platform
host_pid=${pids[-1]}
trellis=$PWD/target/release/trellis

rss_mib() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$host_pid/status"; }
# p50, p90 and p99 of the numbers on stdin (seconds), in ms.
percentiles() {
  sort -n | awk '{v[NR] = $1} END {
    i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
    i99 = int(NR * 0.99 + 0.999); if (i99 > NR) i99 = NR
    i90 = int(NR * 0.90); if (i90 < 1) i90 = 1
    printf "p50 %.1f ms   p90 %.1f ms   p99 %.1f ms   max %.1f ms", v[i50] * 1000, v[i90] * 1000, v[i99] * 1000, v[NR] * 1000}'
}

# The shop without the benchmark guest, as an app directory of its own.
app=$work/app
for component in user order payment; do
  mkdir -p "$app/components/$component"
  cp -r "components/$component/migrations" "$app/components/$component/"
done
cp openapi.json "$app/"
awk -v root="$PWD/" '
  /^# --- benchmark guest/ {skip = 1}
  /^# --- components/ {skip = 0}
  /^\[component\.hello/ {skip = 1}
  /^\[component\.(user|order|payment)/ {skip = 0}
  !skip' spin.toml | sed "s|^source = \"target/|source = \"${PWD}/target/|" >"$app/spin.toml"

tenants=$(seq -f 't%04g' 1 "$TENANTS")
printf 'trellis serve: RSS %s MiB before any tenant\n' "$(rss_mib)"

started=$(date +%s.%N)
export app trellis
echo "$tenants" | xargs -P "$PARALLEL" -I{} sh -c \
  '"$trellis" tenant create {} >/dev/null && "$trellis" deploy --tenant {} -f "$app/spin.toml" >/dev/null 2>&1 \
   || { echo "deploying to {} failed" >&2; exit 255; }'
finished=$(date +%s.%N)
deployed=$(curl -fsS -H "Authorization: Bearer $TRELLIS_ADMIN_TOKEN" "$TRELLIS_ADMIN_URL/v1/status" |
  grep -o '"serving":true' | wc -l)
printf 'deployed the shop to %d tenants (%s serving) in %.1f s, %d at a time\n' "$TENANTS" \
  "${deployed:-?}" "$(echo "$finished - $started" | bc)" "$PARALLEL"
printf 'trellis serve: RSS %s MiB with %d tenants\n' "$(rss_mib)" "$TENANTS"

# What the tenants cost at rest: CPU over 5 s with no traffic.
sleep 5
before=$(cpu_snapshot); sleep 5; after=$(cpu_snapshot)
read -r t0 p0 r0 a0 <<<"$before"; read -r t1 p1 r1 a1 <<<"$after"
awk -v hz="$(getconf CLK_TCK)" -v t=$((t1 - t0)) -v p=$((p1 - p0)) -v r=$((r1 - r0)) -v a=$((a1 - a0)) \
  'BEGIN { f = 100 / hz / 5; printf "idle CPU (%% of one core): trellis %.1f, postgres %.1f, rabbitmq %.1f, whole machine %.1f\n", t * f, p * f, r * f, a * f }'

# First requests, one per tenant in a random order.
for tenant in $(echo "$tenants" | shuf); do
  curl -fsS -o /dev/null -w '%{time_total}\n' -H "Host: shop.$tenant.localhost" \
    "http://127.0.0.1:$PORT/users?limit=1" || echo "first request to $tenant failed" >&2
done >"$work/first.txt"
printf 'first request per tenant (%d):  %s\n' "$(wc -l <"$work/first.txt")" \
  "$(percentiles <"$work/first.txt")"

# Warm: tenants in turn, as fast as wrk goes; first a working set of 32
# tenants (their roles' connections fit under --max-db-connections, 64),
# then every tenant (more roles than connections: each request may need a
# new one, closing the one idle longest).
warm() { # tenants label
  cat >"$work/spread.lua" <<LUA
local n, i = $1, 0
request = function()
  i = i % n + 1
  return wrk.format("GET", "/users?limit=1", { Host = string.format("shop.t%04d.localhost", i) })
end
LUA
  local out
  out=$(wrk -t1 -c16 -d"$DURATION" --latency -s "$work/spread.lua" "http://127.0.0.1:$PORT" | parse)
  read -r rps p50 p99 <<<"$out"
  printf 'warm, %-28s %9s req/s   p50 %-8s p99 %s\n' "$2:" "$rps" "$p50" "$p99"
}
warm $((TENANTS < 32 ? TENANTS : 32)) "32 tenants in turn"
warm "$TENANTS" "all $TENANTS tenants in turn"
printf 'trellis serve: RSS %s MiB after the traffic\n' "$(rss_mib)"

queues=$(rabbitmqctl -q list_queues -p "$VHOST" name --no-table-headers | wc -l)
broker_mib=$(rabbitmqctl -q status --formatter json |
  python3 -c 'import json,sys; print(round(json.load(sys.stdin)["memory"]["total"]["rss"] / 2**20))' 2>/dev/null || echo '?')
schemas=$(psql -qtA -h 127.0.0.1 -U postgres -d "$DB" -c "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\_%'")
connections=$(psql -qtA -h 127.0.0.1 -U postgres -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE datname = '$DB'")
printf 'broker: %s queues in the vhost, RabbitMQ RSS %s MiB; Postgres: %s tenant schemas, %s connections to the database now\n' \
  "$queues" "$broker_mib" "$schemas" "$connections"
