#!/usr/bin/env bash
# Deploying under `trellis serve`: how long until a deployment takes effect.
#
#   bench/deploy.sh
#
# On a fresh platform database and RabbitMQ vhost: the whole shop deployed
# to a tenant (its components compiled), a new order component (new bytes,
# compiled), then rollbacks between the two kept versions (compiled
# already). Each line is the host's time from receiving the deployment to
# routing the new app ("on the host") and the CLI's round trip ("in all").
# Target: an already-compiled component takes effect in under 50 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

PORT=${PORT:-3820}
ADMIN=${ADMIN:-3821}
DB=${DB:-trellis_bench_deploy}
VHOST=${VHOST:-trellis_bench_deploy}
ROUNDS=${ROUNDS:-5}
export TRELLIS_ADMIN_TOKEN=bench-deploy-token-0123456789
export TRELLIS_ADMIN_URL=http://127.0.0.1:$ADMIN

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release -p trellis
cargo build --release --target wasm32-wasip2 -p user -p order -p payment

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
rabbitmqctl -q add_vhost "$VHOST" >/dev/null
rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null

target/release/trellis serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN" \
  --database-url "postgres://postgres@127.0.0.1:5432/$DB" \
  --amqp-url "amqp://guest:guest@127.0.0.1:5672/$VHOST" \
  --cache-dir "$work/cache" --state-dir "$work/state" >"$work/out" 2>"$work/err" &
pids+=($!)
for _ in $(seq 1 200); do grep -q "^Admin API" "$work/out" 2>/dev/null && break; sleep 0.1; done

trellis=target/release/trellis
live() { grep -o 'live ([0-9]* ms on the host, [0-9]* ms in all)' | tr -d '()' | sed 's/^live //'; }

$trellis tenant create bench >/dev/null
printf '%-44s %s\n' "deploy the shop (compiles 3 components)" \
  "$($trellis deploy --tenant bench -f spin.toml 2>/dev/null | live)"

# Other bytes, same behaviour: a custom section appended.
cp target/wasm32-wasip2/release/order.wasm "$work/order-v2.wasm"
printf '\x00\x10\x0dtrellis-benchv2' >> "$work/order-v2.wasm"
printf '%-44s %s\n' "deploy order v2 (new bytes: compiles)" \
  "$($trellis deploy --tenant bench --app shop --component order "$work/order-v2.wasm" 2>/dev/null | live)"
for i in $(seq 1 "$ROUNDS"); do
  printf '%-44s %s\n' "rollback order to v1 (compiled already)" \
    "$($trellis rollback --tenant bench --app shop --component order --to 1 | live)"
  printf '%-44s %s\n' "roll forward to v2 (compiled already)" \
    "$($trellis rollback --tenant bench --app shop --component order --to 2 | live)"
done
curl -fsS -o /dev/null -H "Host: shop.bench.localhost" "http://127.0.0.1:$PORT/users" \
  && echo "the shop answers at shop.bench.localhost"
