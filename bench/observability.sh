#!/usr/bin/env bash
# The cost of tracing on GET /users/{id}: the same trellis, the same user
# component and table, with the OTLP exporter off and on (sending every span
# to a local sink that counts them). Metrics are on in both. Runs alternate,
# off/on, ROUNDS times, so drift hits both alike; on this 2-core machine two
# runs of the same build differ by up to 15%, so it takes six rounds for the
# ratio to settle. Each run also prints the CPU time trellis (all of its
# threads, the exporter's included) and the sink spent per request.
#
#   bench/observability.sh                 # 10 s per run, 6 rounds
#   DURATION=20s ROUNDS=8 bench/observability.sh
#   OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1 bench/observability.sh
#
# The sink shares this machine's cores with trellis, Postgres and wrk, so its
# own cost (and the exporter thread's) is in the figures; with a collector
# elsewhere only the exporter thread's would be.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-6}
USERS=${USERS:-1000}
PORT=${PORT:-3821}
SINK_PORT=${SINK_PORT:-3822}
DB=${DB:-trellis_bench_observability}
ADMIN_URL="postgres://postgres@127.0.0.1:5432/$DB"

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release -p trellis
cargo build --release --target wasm32-wasip2 -p user

work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null

user_app

# An OTLP/HTTP sink: accepts every export, counts requests and bytes (a GET
# reads the counts). It stands in for a collector on another machine, so it
# is kept as cheap as Python allows: one event loop, no HTTP framework (the
# standard library's threading server cost 5x as much CPU per export).
cat > "$work/sink.py" <<'PY'
import asyncio, sys
count = {"requests": 0, "bytes": 0}
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            method = head.split(b" ", 1)[0]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            if method == b"POST":
                count["requests"] += 1
                count["bytes"] += length
                body = b""
            else:
                body = f'{count["requests"]} {count["bytes"]}\n'.encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), limit=1 << 20)
    async with server:
        await server.serve_forever()
asyncio.run(main())
PY
python3 "$work/sink.py" "$SINK_PORT" &
sink_pid=$!
pids+=("$sink_pid")
wait_for "http://127.0.0.1:$SINK_PORT/"

start() { # extra args...
  target/release/trellis up -f "$work/spin.toml" --listen "127.0.0.1:$PORT" \
    --database-url "$ADMIN_URL" --cache-dir "$work/cache" "$@" \
    >"$work/trellis.out" 2>"$work/trellis.err" &
  trellis_pid=$!
  wait_for "http://127.0.0.1:$PORT/health"
}
stop() { kill "$trellis_pid"; wait "$trellis_pid" 2>/dev/null || true; }

start
seed_users "http://127.0.0.1:$PORT"
stop

cat > "$work/random.lua" <<LUA
math.randomseed(os.time())
request = function() return wrk.format("GET", "/users/" .. math.random(1, $USERS)) end
LUA
# rps p50 p99, then the CPU time per request of trellis (all its threads,
# the exporter's included) and of the sink, in microseconds.
run() {
  wrk -t1 -c32 -d2s -s "$work/random.lua" "http://127.0.0.1:$PORT" >/dev/null
  local before after figures
  before="$(ticks_of "$trellis_pid") $(ticks_of "$sink_pid") $(date +%s.%N)"
  figures=$(wrk -t1 -c32 -d"$DURATION" --latency -s "$work/random.lua" "http://127.0.0.1:$PORT" | parse)
  after="$(ticks_of "$trellis_pid") $(ticks_of "$sink_pid") $(date +%s.%N)"
  echo "$figures $before $after" | awk -v hz="$(getconf CLK_TCK)" '{
    requests = $1 * ($9 - $6)
    printf "%s %s %s %.0f %.0f\n", $1, $2, $3, ($7 - $4) / hz * 1e6 / requests, ($8 - $5) / hz * 1e6 / requests }'
}

echo
echo "GET /users/{id}, $USERS users, wrk -t1 -c32, $DURATION per run, $ROUNDS rounds"
echo "sampler: ${OTEL_TRACES_SAMPLER:-parentbased_always_on (default)} ${OTEL_TRACES_SAMPLER_ARG:-}"
printf '%-10s %6s %11s %9s %9s %16s %13s\n' exporter round requests/s p50 p99 "trellis CPU/req" "sink CPU/req"
off_total=0; on_total=0
measure() { # off|on round
  if [ "$1" = on ]; then start --otlp-endpoint "http://127.0.0.1:$SINK_PORT"; else start; fi
  read -r rps p50 p99 cpu sink_cpu <<<"$(run)"
  stop
  printf '%-10s %6s %11s %9s %9s %13s us %10s us\n' "$1" "$2" "$rps" "$p50" "$p99" "$cpu" "$sink_cpu"
  if [ "$1" = on ]; then
    on_total=$(awk -v a="$on_total" -v b="$rps" 'BEGIN {print a + b}')
  else
    off_total=$(awk -v a="$off_total" -v b="$rps" 'BEGIN {print a + b}')
  fi
}
# Odd rounds off first, even rounds on first: neither always runs on a
# warmer database.
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then
    measure off "$round"; measure on "$round"
  else
    measure on "$round"; measure off "$round"
  fi
done
read -r exports bytes <<<"$(curl -fsS "http://127.0.0.1:$SINK_PORT/")"
echo
echo "the sink received $exports exports, $bytes bytes of spans"
awk -v off="$off_total" -v on="$on_total" 'BEGIN {
  printf "throughput with the exporter on: %.1f%% of off   (target: loss under 10%%)\n", 100 * on / off }'
