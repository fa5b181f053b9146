#!/usr/bin/env bash
# Noisy neighbours under `trellis serve`: how much one tenant's p99 rises
# while another tenant is over its limits, loops or hogs memory.
#
#   bench/tenants.sh
#   DURATION=20s bench/tenants.sh
#
# Tenants `calm` (host defaults) and `noisy` (100 requests/s, 4 instances,
# a quarter of a core,
# 500 ms deadline, 32 MiB per instance) both run the testbed component.
# calm is measured with wrk -c8 on GET /echo, alone and then while noisy
# takes 64 connections of /echo (beyond its rate), /loop (guests spinning
# until their deadline) or /hog (guests allocating until their memory
# limit). Target: calm's p99 at most 2x its p99 alone. What noisy's clients
# got meanwhile is printed under each line (most of it refusals).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

DURATION=${DURATION:-10s}
PORT=${PORT:-3830}
ADMIN=${ADMIN:-3831}
DB=${DB:-trellis_bench_tenants}
VHOST=${VHOST:-trellis_bench_tenants}
ROLE_PREFIX="t_calm_ t_noisy_"
export TRELLIS_ADMIN_TOKEN=bench-tenants-token-0123456789
export TRELLIS_ADMIN_URL=http://127.0.0.1:$ADMIN

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release -p trellis
cargo build --release --target wasm32-wasip2 -p testbed

fresh_services

start_platform

mkdir -p "$work/app"
cat > "$work/app/spin.toml" <<TOML
spin_manifest_version = 2
[application]
name = "tb"
[[trigger.http]]
route = "/..."
component = "testbed"
[component.testbed]
source = "$PWD/target/wasm32-wasip2/release/testbed.wasm"
TOML
trellis=target/release/trellis
$trellis tenant create calm >/dev/null
$trellis tenant create noisy --requests-per-second 100 --max-concurrency 4 --cpu-millicores 250 \
  --timeout-ms 500 --memory-limit-mib 32 >/dev/null
for tenant in calm noisy; do
  $trellis deploy --tenant "$tenant" -f "$work/app/spin.toml" >/dev/null 2>&1
done

calm() { # label
  local out
  out=$(wrk -t1 -c8 -d"$DURATION" --latency -H "Host: tb.calm.localhost" \
    "http://127.0.0.1:$PORT/echo" | parse)
  read -r rps p50 p99 <<<"$out"
  printf '%-40s %10s req/s   p50 %-9s p99 %s\n' "$1" "$rps" "$p50" "$p99"
}
noisy() { # path: 64 connections on noisy's path for the duration, in the background
  wrk -t1 -c"${NOISY_CONNS:-64}" -d"$DURATION" -H "Host: tb.noisy.localhost" \
    "http://127.0.0.1:$PORT$1" >"$work/noisy.out" 2>&1 &
  pids+=($!)
  sleep 0.5
}

echo "calm: wrk -t1 -c8 GET /echo, $DURATION each"
wrk -t1 -c8 -d2s -H "Host: tb.calm.localhost" "http://127.0.0.1:$PORT/echo" >/dev/null
calm "alone"
noisy_done() { # what noisy's clients got
  wait "${pids[-1]}" || true
  awk '/Requests\/sec/ {rps=$2} /Non-2xx/ {refused=$NF} END {printf "%-40s %10s req/s   (%s of them refused)\n", "  noisy meanwhile", rps, refused + 0}' "$work/noisy.out"
}
noisy /echo; calm "noisy over its rate (64 conns /echo)"; noisy_done
noisy /loop; calm "noisy looping until its deadline"; noisy_done
noisy /hog; calm "noisy hogging memory"; noisy_done
echo "(target: calm's p99 at most 2x alone)"
