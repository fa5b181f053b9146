#!/usr/bin/env bash
# HTTP benchmark: trellis vs `wasmtime serve` (48.0.8, defaults) on the same
# hello component, a fresh instance per request on both.
#
#   bench/http.sh                 # 10 s per run
#   DURATION=30s bench/http.sh
#
# Prints requests/s and p50/p99 latency for wrk -t1 -c32 (throughput) and
# -c1 (latency), the trellis/wasmtime ratios, and trellis's time from process
# start to first response with a warm compiled-component cache.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

DURATION=${DURATION:-10s}
WASMTIME_VERSION=48.0.8
TRELLIS_PORT=${TRELLIS_PORT:-3801}
WASMTIME_PORT=${WASMTIME_PORT:-3802}

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
if ! wasmtime --version 2>/dev/null | grep -q "$WASMTIME_VERSION"; then
  echo "installing wasmtime-cli $WASMTIME_VERSION (about 25 minutes, once)..." >&2
  cargo install --locked "wasmtime-cli@$WASMTIME_VERSION"
fi
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true

cargo build --release -p trellis
cargo build --release --target wasm32-wasip2 -p hello
HELLO=$PWD/target/wasm32-wasip2/release/hello.wasm
TRELLIS=$PWD/target/release/trellis

work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/spin.toml" <<TOML
spin_manifest_version = 2
[application]
name = "bench"
[[trigger.http]]
route = "/..."
component = "hello"
[component.hello]
source = "$HELLO"
TOML



run_wrk() { # url connections
  wrk -t1 -c"$2" -d2s "$1" >/dev/null   # warm-up
  wrk -t1 -c"$2" -d"$DURATION" --latency "$1" | parse
}

# Latency like "1.23ms" / "850.00us" / "1.02s" -> microseconds
to_us() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v + 0 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000000 }
    else print v }'
}

"$TRELLIS" up -f "$work/spin.toml" --listen "127.0.0.1:$TRELLIS_PORT" --cache-dir "$work/cache" \
  >"$work/trellis.out" 2>"$work/trellis.err" &
pids+=($!)
wait_for "http://127.0.0.1:$TRELLIS_PORT/"

# `-S cli`: the guest imports wasi:cli/environment (Rust std); it changes no
# performance setting, `wasmtime serve` is otherwise at its defaults.
wasmtime serve --addr "127.0.0.1:$WASMTIME_PORT" -S cli "$HELLO" >"$work/wasmtime.out" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$WASMTIME_PORT/"

echo
echo "hello component, fresh instance per request, wrk -t1, $DURATION per run"
printf '%-22s %12s %12s %12s\n' "server / connections" "requests/s" "p50" "p99"
declare -A R
for c in 32 1; do
  for s in trellis wasmtime; do
    port=$TRELLIS_PORT; [ "$s" = wasmtime ] && port=$WASMTIME_PORT
    out=$(run_wrk "http://127.0.0.1:$port/" "$c")
    read -r rps p50 p99 <<<"$out"
    R[$s.$c.rps]=$rps; R[$s.$c.p50]=$p50; R[$s.$c.p99]=$p99
    printf '%-22s %12s %12s %12s\n' "$s -c$c" "$rps" "$p50" "$p99"
  done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
echo "throughput ratio trellis/wasmtime (-c32): $(ratio "${R[trellis.32.rps]}" "${R[wasmtime.32.rps]}")x   (target >= 2.0x)"
echo "p99 ratio trellis/wasmtime (-c32):        $(ratio "$(to_us "${R[trellis.32.p99]}")" "$(to_us "${R[wasmtime.32.p99]}")")   (target <= 1.0)"
echo "p99 ratio trellis/wasmtime (-c1):         $(ratio "$(to_us "${R[trellis.1.p99]}")" "$(to_us "${R[wasmtime.1.p99]}")")"

# Start-up with a warm cache: process start to first 200.
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
python3 - "$TRELLIS" "$work/spin.toml" "$work/cache" "$TRELLIS_PORT" <<'PY'
import socket, subprocess, sys, time
trellis, manifest, cache, port = sys.argv[1:5]
samples = []
for _ in range(5):
    start = time.monotonic()
    proc = subprocess.Popen([trellis, "up", "-f", manifest, "--listen", f"127.0.0.1:{port}", "--cache-dir", cache],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            with socket.create_connection(("127.0.0.1", int(port)), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                if s.recv(16).startswith(b"HTTP/1.1 200"):
                    break
        except OSError:
            time.sleep(0.001)
    samples.append((time.monotonic() - start) * 1000)
    proc.terminate(); proc.wait()
samples.sort()
print(f"start to first response, warm cache: median {samples[len(samples)//2]:.1f} ms, max {samples[-1]:.1f} ms  (target <= 100 ms)")
PY
