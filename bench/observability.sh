#!/usr/bin/env bash
# The cost of tracing on GET /users/{id}: the same trellis, the same user
# component and table, with the OTLP exporter off and on (sending every span
# to a local sink that counts them). Metrics are on in both. Runs alternate,
# off/on, ROUNDS times, so drift hits both alike.
#
#   bench/observability.sh                 # 10 s per run, 3 rounds
#   DURATION=20s ROUNDS=5 bench/observability.sh
#   OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1 bench/observability.sh
#
# The sink shares this machine's cores with trellis, Postgres and wrk, so its
# own cost (and the exporter thread's) is in the figures; with a collector
# elsewhere only the exporter thread's would be.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
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

# An OTLP/HTTP sink: accepts every export, counts requests and bytes.
cat > "$work/sink.py" <<'PY'
import http.server, sys, threading
count = {"requests": 0, "bytes": 0}
lock = threading.Lock()
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        with lock:
            count["requests"] += 1
            count["bytes"] += n
        self.send_response(200)
        self.send_header("content-type", self.headers.get("content-type", "application/x-protobuf"))
        self.send_header("content-length", "0")
        self.end_headers()
    def do_GET(self):
        body = f'{count["requests"]} {count["bytes"]}\n'.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
python3 "$work/sink.py" "$SINK_PORT" &
pids+=($!)
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
run() {
  wrk -t1 -c32 -d2s -s "$work/random.lua" "http://127.0.0.1:$PORT" >/dev/null
  wrk -t1 -c32 -d"$DURATION" --latency -s "$work/random.lua" "http://127.0.0.1:$PORT" | parse
}

echo
echo "GET /users/{id}, $USERS users, wrk -t1 -c32, $DURATION per run, $ROUNDS rounds"
echo "sampler: ${OTEL_TRACES_SAMPLER:-parentbased_always_on (default)} ${OTEL_TRACES_SAMPLER_ARG:-}"
printf '%-10s %8s %12s %10s %10s\n' exporter round requests/s p50 p99
off_total=0; on_total=0
measure() { # off|on round
  if [ "$1" = on ]; then start --otlp-endpoint "http://127.0.0.1:$SINK_PORT"; else start; fi
  read -r rps p50 p99 <<<"$(run)"
  stop
  printf '%-10s %8s %12s %10s %10s\n' "$1" "$2" "$rps" "$p50" "$p99"
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
