# Shared by the bench/*.sh scripts (sourced, not run).

# Waits until `url` answers 2xx, at most 60 s.
wait_for() { # url
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "server at $1 did not answer" >&2; exit 1
}

# rps p50 p99 from wrk --latency output; a run with non-2xx answers or socket
# errors measured something else, so it stops the benchmark.
parse() {
  awk '/Requests\/sec:/ {rps=$2}
       /^ +50%/ {p50=$2}
       /^ +99%/ {p99=$2}
       /Non-2xx|Socket errors/ {bad=$0}
       END {if (bad != "") {print "wrk reported: " bad > "/dev/stderr"; exit 1}; print rps, p50, p99}'
}
