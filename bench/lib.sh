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

# A fresh database $DB and RabbitMQ vhost $VHOST (whatever a previous run
# left is dropped first), a work directory $work, and on exit: the processes
# in `pids` stopped, the vhost and the work directory removed.
# Tenants' roles are the server's, not the database's: a script that names
# them sets ROLE_PREFIX (prefixes, e.g. `t_calm_ t_noisy_`), and they are
# dropped with $DB.
fresh_services() {
  work=$(mktemp -d)
  pids=()
  trap cleanup EXIT
  drop_database
  rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
  rabbitmqctl -q add_vhost "$VHOST" >/dev/null
  rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null
}

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  drop_database
  rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
  rm -rf "$work"
}

drop_database() {
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" 2>/dev/null
  local prefix
  for prefix in ${ROLE_PREFIX:-}; do
    psql -qtA -h 127.0.0.1 -U postgres -d postgres -c \
      "SELECT format('DROP ROLE %I;', rolname) FROM pg_roles WHERE starts_with(rolname, '$prefix')" |
      psql -q -h 127.0.0.1 -U postgres -d postgres >/dev/null
  done
}

# Starts `trellis serve` on $PORT (admin API on $ADMIN) over $DB and $VHOST,
# and waits until it announces its admin API.
start_platform() {
  target/release/trellis serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN" \
    --database-url "postgres://postgres@127.0.0.1:5432/$DB" \
    --amqp-url "amqp://guest:guest@127.0.0.1:5672/$VHOST" \
    --cache-dir "$work/cache" --state-dir "$work/state" >"$work/out" 2>"$work/err" &
  pids+=($!)
  for _ in $(seq 1 200); do grep -q "^Admin API" "$work/out" 2>/dev/null && return 0; sleep 0.1; done
  echo "trellis serve did not start:" >&2; cat "$work/err" >&2; exit 1
}

# CPU time (user + system, in clock ticks) used so far by the processes
# named. `cpu_snapshot`: trellis (the first of `pids`), Postgres and RabbitMQ
# (by process name), and the whole machine.
ticks_of() {
  local total=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    total=$(( total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}') ))
  done
  echo "$total"
}
cpu_snapshot() {
  echo "$(ticks_of "${pids[0]}") $(ticks_of $(pgrep -x postgres)) $(ticks_of $(pgrep -x beam.smp))" \
    "$(awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat)"
}

# $work/spin.toml: the user service alone, on a managed database (the
# GET /users/{id} benchmarks).
user_app() {
  cat > "$work/spin.toml" <<TOML
spin_manifest_version = 2
[application]
name = "bench"
[[trigger.http]]
route = "/users/..."
component = "user"
[[trigger.http]]
route = "/users"
component = "user"
[component.user]
source = "$PWD/target/wasm32-wasip2/release/user.wasm"
[component.user.variables]
db_url = "postgres://trellis.internal/users"
[component.user.tool.trellis.databases.users]
migrations = "migrations"
TOML
  # A manifest names only files inside its directory.
  rm -rf "$work/migrations" && cp -r components/user/migrations "$work/migrations"
}

# Creates $USERS users through the server at $1.
seed_users() { # base url
  echo "seeding $USERS users..."
  for i in $(seq 1 "$USERS"); do
    printf '{"email":"user%d@example.com","name":"User %d"}' "$i" "$i" |
      curl -fsS -o /dev/null -X POST --data-binary @- "$1/users"
  done
}
