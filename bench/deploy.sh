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
ROLE_PREFIX="t_bench_"
ROUNDS=${ROUNDS:-5}
export TRELLIS_ADMIN_TOKEN=bench-deploy-token-0123456789
export TRELLIS_ADMIN_URL=http://127.0.0.1:$ADMIN

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release -p trellis
cargo build --release --target wasm32-wasip2 -p user -p order -p payment

fresh_services

start_platform

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
