#!/usr/bin/env bash
# SMPP benchmark: POST /v1/messages -> Portcullis -> submit_sm at a fake SMSC, on one machine.
#
#   B=/tmp/target-bench/release/portcullis PEERS=/work/shared/peers bash scripts/bench-smpp.sh
#
# For each peer mode (no receipts; a receipt for every message) it:
#   1. starts the fake SMSC (PEERS/fake-smsc.js, node-smpp) with a stats file;
#   2. measures the peer's own ceiling in the same run (PEERS/smpp-blaster.js: BLAST_N
#      submit_sm over 1 bind, window 100; with receipts it also waits for every deliver_sm);
#   3. for each backend and bind count: starts the gateway on a fresh data dir (SQLite with
#      durable commits, the default; PostgreSQL on a fresh database with PG=1), creates the
#      SMPP connection and the app's route with the CLI, restarts the gateway so it binds at
#      start, warms up, then runs `portcullis bench` (N messages, CONC connections, --pid)
#      until every message is `sent` (no receipts) or `delivered` (receipts), and reads the
#      peer's counters.
#
# Prints one line per run and a table at the end: HTTP accepted/s, submit_sm/s at the peer
# (first to last submit_sm), end-to-end msgs/s (start of the load to the last submit_sm;
# with receipts also to the last `delivered`), gateway CPU ms per message, the peer's CPU,
# and the CPU of everything else on the machine during the run (the load generator plus any
# other work: a run where that is high was disturbed).
#
# Before each measurement it waits (at most QUIET_MAX_S) until the machine's CPU use is
# under QUIET_CORES for 3 s. Everything listens on 127.0.0.1, and every process started here
# is stopped on exit.
#
# Settings (defaults in brackets):
#   B            the portcullis binary (release build)         [required]
#   PEERS        the directory with fake-smsc.js, smpp-blaster.js and node_modules
#                ("npm ci" there first)                        [/work/shared/peers]
#   N [20000]  CONC [64]  WARMUP [1000]  BLAST_N [100000]  REPS [1]
#   WARMUP_DLR [1000]  warm-up messages with receipts (before the rusmppc fix a second
#                burst after the first one's receipts stalled; docs/benchmarks.md, "The stall")
#   MODES ["nodlr dlr"]   BINDS ["1 4"]   WINDOW [100]
#   DLR_DELAY_MS [500]    the peer waits this long before each receipt (as Kannel's run)
#   WAIT_TIMEOUT [120]  seconds the bench waits for every message to be sent or delivered
#   PG [0]       1: also on PostgreSQL (PG_URL [postgres://postgres@127.0.0.1:5432])
#   QUIET_CORES [0.2]  QUIET_MAX_S [600]
#   SMSC_PORT [12775]  GW_PORT [18090]  OUT [a new directory under /tmp]
set -euo pipefail

: "${B:?set B to the portcullis release binary}"
PEERS=${PEERS:-/work/shared/peers}
N=${N:-20000}
CONC=${CONC:-64}
WARMUP=${WARMUP:-1000}
WARMUP_DLR=${WARMUP_DLR:-1000}
BLAST_N=${BLAST_N:-100000}
REPS=${REPS:-1}
MODES=${MODES:-"nodlr dlr"}
BINDS=${BINDS:-"1 4"}
WINDOW=${WINDOW:-100}
DLR_DELAY_MS=${DLR_DELAY_MS:-500}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-120}
PG=${PG:-0}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
QUIET_CORES=${QUIET_CORES:-0.2}
QUIET_MAX_S=${QUIET_MAX_S:-600}
SMSC_PORT=${SMSC_PORT:-12775}
GW_PORT=${GW_PORT:-18090}
OUT=${OUT:-$(mktemp -d /tmp/bench-smpp.XXXXXX)}
GW_URL=http://127.0.0.1:$GW_PORT
TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
RESULTS=$OUT/results.jsonl

[ -x "$B" ] || { echo "B=$B is not an executable" >&2; exit 1; }
[ -d "$PEERS/node_modules/smpp" ] || { echo "no $PEERS/node_modules: run 'npm ci' in $PEERS" >&2; exit 1; }
mkdir -p "$OUT"
: > "$RESULTS"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }

# ------------------------------------------------------------------ processes
SMSC_PID=
GW_PID=
PG_DBS=()

stop_pid() { # pid: SIGTERM, then SIGKILL after 10 s
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  log "pid $pid ignored SIGTERM, sending SIGKILL"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  set +e
  [ -n "$GW_PID" ] && stop_pid "$GW_PID"
  [ -n "$SMSC_PID" ] && stop_pid "$SMSC_PID"
  local db
  for db in "${PG_DBS[@]}"; do
    psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port seconds
  for _ in $(seq $(($2 * 10))); do port_open "$1" && return 0; sleep 0.1; done
  return 1
}

ticks() { # utime + stime of the given pids, in clock ticks
  local s=0 p
  for p in "$@"; do
    if [ -r "/proc/$p/stat" ]; then s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat"))); fi
  done
  echo "$s"
}
pg_pids() { ps -u postgres -o pid= 2>/dev/null | tr '\n' ' '; }
machine_busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
machine_total() { awk '/^cpu /{print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }

wait_quiet() { # until the whole machine used under QUIET_CORES for 3 s (at most QUIET_MAX_S)
  local start=$SECONDS b0 t0 b1 t1 cores
  while :; do
    b0=$(machine_busy); t0=$(machine_total); sleep 3; b1=$(machine_busy); t1=$(machine_total)
    cores=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) -v n="$NCPU" 'BEGIN{printf "%.2f", t ? b / t * n : 0}')
    if awk -v c="$cores" -v q="$QUIET_CORES" 'BEGIN{exit !(c < q)}'; then return 0; fi
    if [ $((SECONDS - start)) -ge "$QUIET_MAX_S" ]; then
      log "machine still busy ($cores cores) after ${QUIET_MAX_S}s: measuring anyway"
      return 0
    fi
    log "waiting for a quiet machine ($cores cores busy)"
  done
}

# ------------------------------------------------------------------ the fake SMSC
smsc_start() { # mode
  local extra=()
  [ "$1" = dlr ] && extra=(--dlr all --dlr-delay-ms "$DLR_DELAY_MS")
  # Not --quiet: its log gets a line per second with that second's submit_sm count.
  ( exec node "$PEERS/fake-smsc.js" --host 127.0.0.1 --port "$SMSC_PORT" \
      --stats "$OUT/smsc-stats.json" "${extra[@]}" >"$OUT/smsc-$1.log" 2>&1 ) &
  SMSC_PID=$!
  wait_port "$SMSC_PORT" 10 || { log "the fake SMSC did not start"; exit 1; }
  log "fake SMSC pid $SMSC_PID on 127.0.0.1:$SMSC_PORT (mode $1)"
}
smsc_reset() { kill -USR2 "$SMSC_PID"; sleep 0.5; }
smsc_stat() { jq -r ".$1 // 0" "$OUT/smsc-stats.json"; }

# The peer alone: smpp-blaster.js against the same fake SMSC process.
smsc_ceiling() { # mode
  local wait_dlr=() t0 t1 out user sys
  [ "$1" = dlr ] && wait_dlr=(--wait-dlr)
  wait_quiet
  smsc_reset
  t0=$(ticks "$SMSC_PID")
  /usr/bin/time -f '%U %S' -o "$OUT/blaster.time" \
    node "$PEERS/smpp-blaster.js" --port "$SMSC_PORT" --binds 1 --window 100 \
    --count "$BLAST_N" --timeout 300 "${wait_dlr[@]}" >"$OUT/blaster.out" 2>&1
  t1=$(ticks "$SMSC_PID")
  out=$(tail -n 1 "$OUT/blaster.out")
  read -r user sys < "$OUT/blaster.time"
  jq -c --arg mode "$1" --argjson peer_ticks $((t1 - t0)) --argjson tck "$TCK" \
    --argjson blaster_cpu "$(awk -v u="$user" -v s="$sys" 'BEGIN{print u + s}')" \
    '{kind: "ceiling", mode: $mode, binds, window, count, ok, fail,
      submit_per_s, dlr_received, dlr_per_s, elapsed_s, dlr_elapsed_s,
      peer_cpu_s: ($peer_ticks / $tck), blaster_cpu_s: $blaster_cpu}' <<< "$out" >> "$RESULTS"
  log "ceiling ($1): $(tail -n 1 "$RESULTS")"
}

# ------------------------------------------------------------------ the gateway
gw_start() { # data_dir db_url log
  local args=(serve --dev --data-dir "$1" --listen "127.0.0.1:$GW_PORT")
  [ -n "$2" ] && args+=(--database-url "$2")
  ( PORTCULLIS_LOG=warn exec "$B" "${args[@]}" >>"$3" 2>&1 ) &
  GW_PID=$!
  wait_port "$GW_PORT" 60 || { log "the gateway did not start, see $3"; exit 1; }
}
gw_stop() { [ -n "$GW_PID" ] && stop_pid "$GW_PID"; GW_PID=; }
gw_ready() { # until /readyz says ready (the SMPP session bound), at most 30 s
  for _ in $(seq 300); do
    curl -sf "$GW_URL/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "readyz: $(curl -s "$GW_URL/readyz")"
  return 1
}
cli() { # data_dir db_url args...
  local dir=$1 url=$2; shift 2
  if [ -n "$url" ]; then "$B" --data-dir "$dir" --database-url "$url" "$@"
  else "$B" --data-dir "$dir" "$@"; fi
}

# Fresh gateway with the SMPP connection routed for the bootstrap app; sets KEY.
gw_setup() { # dir db_url binds
  local dir=$1 url=$2 binds=$3 line app conn
  rm -rf "$dir"; mkdir -p "$dir"
  gw_start "$dir" "$url" "$dir/gateway.log"
  for _ in $(seq 100); do grep -q '^bootstrap: ' "$dir/gateway.log" && break; sleep 0.1; done
  line=$(grep -m1 '^bootstrap: ' "$dir/gateway.log" | sed 's/^bootstrap: //')
  KEY=$(jq -r .key <<< "$line"); app=$(jq -r .app_id <<< "$line")
  if [ -z "$KEY" ] || [ "$KEY" = null ]; then log "no bootstrap line in $dir/gateway.log"; exit 1; fi
  jq -n --argjson port "$SMSC_PORT" --argjson binds "$binds" --argjson window "$WINDOW" \
    '{host: "127.0.0.1", port: $port, system_id: "portcullis", password: "bench",
      binds: $binds, window: $window, source_addr: "+14155550199"}' > "$dir/smpp.json"
  conn=$(cli "$dir" "$url" connections create --type smpp --name fake-smsc \
    --config-file "$dir/smpp.json" --json | jq -r .id)
  cli "$dir" "$url" apps route "$app" --connections "$conn" --json >/dev/null
  # A fresh app has no baseline, so burst detection would hold every message past the
  # 600th of a minute for review.
  cli "$dir" "$url" apps update "$app" --burst-min-per-minute 0 --json >/dev/null
  # A connection is bound when the gateway starts: restart so the run does not wait for it.
  gw_stop
  gw_start "$dir" "$url" "$dir/gateway.log"
  gw_ready || { log "the SMPP connection did not bind"; exit 1; }
  log "gateway pid $GW_PID: connection $conn ($binds bind(s), window $WINDOW) routed for $app"
}

bench() { # wait_flag requests [extra...]
  local flag=$1 n=$2; shift 2
  PORTCULLIS_BENCH_KEY=$KEY "$B" bench --url "$GW_URL" --requests "$n" \
    --concurrency "$CONC" "$flag" --wait-timeout "$WAIT_TIMEOUT" --json "$@"
}

gw_run() { # mode backend binds rep
  local mode=$1 backend=$2 binds=$3 rep=$4 dir url="" flag=--wait-sent warmup=$WARMUP
  dir=$OUT/gw-$mode-$backend-$binds-$rep
  if [ "$mode" = dlr ]; then flag=--wait-delivered; warmup=$WARMUP_DLR; fi
  if [ "$backend" = postgres ]; then
    local db="portcullis_smpp_$$_${mode}_${binds}_$rep"
    psql -q "$PG_URL/postgres" -c "CREATE DATABASE $db" >/dev/null
    PG_DBS+=("$db")
    url=$PG_URL/$db
  fi
  gw_setup "$dir" "$url" "$binds"
  if [ "$warmup" -gt 0 ]; then
    bench "$flag" "$warmup" > "$dir/warmup.json"
    [ "$mode" = dlr ] && sleep 1   # let the warm-up's receipt acknowledgements finish
  fi
  wait_quiet
  smsc_reset
  local lines0 pg="" g0 p0 s0 m0 t0 g1 p1 s1 m1 t1
  [ "$backend" = postgres ] && pg=$(pg_pids)
  lines0=$(wc -l < "$OUT/smsc-$mode.log")
  # shellcheck disable=SC2086  # pg is a list of pids
  { g0=$(ticks "$GW_PID"); p0=$(ticks $pg); s0=$(ticks "$SMSC_PID"); m0=$(machine_busy); t0=$(date +%s%3N); }
  bench "$flag" "$N" --pid "$GW_PID" > "$dir/bench.json"
  if [ "$mode" = dlr ]; then  # every receipt acknowledged at the peer
    for _ in $(seq 300); do [ "$(smsc_stat deliver_sm_resp)" -ge "$N" ] && break; sleep 0.1; done
  fi
  sleep 0.3  # the stats file is written every 200 ms
  # shellcheck disable=SC2086
  { g1=$(ticks "$GW_PID"); p1=$(ticks $pg); s1=$(ticks "$SMSC_PID"); m1=$(machine_busy); t1=$(date +%s%3N); }
  # The peer's submit_sm per second during the run, for stalls.
  tail -n +$((lines0 + 1)) "$OUT/smsc-$mode.log" | grep 'submit_sm/s=' > "$dir/peer-per-second.txt" || true
  curl -s "$GW_URL/metrics" | grep -E '^portcullis_smpp_' > "$dir/smpp-metrics.txt" || true
  # Warnings and errors in the gateway's log, less the dev-mode notices.
  sed 's/\x1b\[[0-9;]*m//g' "$dir/gateway.log" | grep -E ' (WARN|ERROR) ' | grep -v 'DEV MODE' \
    > "$dir/warnings.txt" || true
  jq -c --arg mode "$mode" --arg backend "$backend" --argjson binds "$binds" \
    --argjson window "$WINDOW" --argjson rep "$rep" --argjson n "$N" --argjson tck "$TCK" \
    --argjson gw $((g1 - g0)) --argjson pg $((p1 - p0)) --argjson peer $((s1 - s0)) \
    --argjson machine $((m1 - m0)) --argjson wall $((t1 - t0)) \
    --argjson warnings "$(wc -l < "$dir/warnings.txt")" \
    --argjson peak "$(sed -n 's/.*submit_sm\/s=\([0-9]*\).*/\1/p' "$dir/peer-per-second.txt" | sort -n | tail -n 1 | grep . || echo 0)" \
    --slurpfile smsc "$OUT/smsc-stats.json" '
    ($smsc[0]) as $s | (.started_unix_ms) as $t0 |
    {kind: "gateway", mode: $mode, backend: $backend, binds: $binds, window: $window,
     rep: $rep, accepted, errors, accepted_per_s: .accepted_msgs_per_sec,
     http_p50_ms: .latency_ms.p50, http_p99_ms: .latency_ms.p99,
     peer_submit_sm: $s.submit_sm, peer_dlr_sent: $s.deliver_sm_sent,
     peer_dlr_acked: $s.deliver_sm_resp, peer_peak_submit_per_s: $peak,
     submit_per_s: ($s.submit_sm / (([$s.last_submit_ms - $s.first_submit_ms, 1] | max) / 1000)),
     e2e_submit_per_s: ($s.submit_sm / (([$s.last_submit_ms - $t0, 1] | max) / 1000)),
     last_submit_s: (($s.last_submit_ms - $t0) / 1000),
     all_sent_s: .delivery.all_sent_seconds,
     all_delivered_s: .delivery.all_terminal_seconds,
     e2e_delivered_per_s: .delivery.end_to_end_msgs_per_sec,
     by_status: .delivery.by_status,
     gw_cpu_ms_per_msg_load: .gateway.cpu_seconds_per_1000_msgs_load,
     gw_cpu_ms_per_msg: (($gw / $tck) * 1000 / $n),
     gw_peak_rss_mib: .gateway.peak_rss_mib,
     gw_cores: (($gw / $tck) / ($wall / 1000)),
     pg_cpu_ms_per_msg: (if $backend == "postgres" then ($pg / $tck) * 1000 / $n else null end),
     peer_cpu_ms_per_msg: (($peer / $tck) * 1000 / $n),
     peer_cores: (($peer / $tck) / ($wall / 1000)),
     other_cores: ((($machine - $gw - $peer - $pg) / $tck) / ($wall / 1000)),
     generator_cpu_s: .load_generator_cpu_seconds,
     wall_s: ($wall / 1000), gateway_warnings: $warnings}' \
    "$dir/bench.json" >> "$RESULTS"
  log "run: $(tail -n 1 "$RESULTS")"
  gw_stop
}

# ------------------------------------------------------------------ main
log "results in $OUT (N=$N CONC=$CONC WARMUP=$WARMUP BINDS='$BINDS' WINDOW=$WINDOW DLR_DELAY_MS=$DLR_DELAY_MS PG=$PG)"
{ echo "date: $(date -Is)"; echo "binary: $B"; "$B" --version; echo "node $(node --version)"
  echo "kernel $(uname -r), $NCPU cpus"; } > "$OUT/versions.txt"
backends=sqlite
[ "$PG" = 1 ] && backends="sqlite postgres"
for mode in $MODES; do
  smsc_start "$mode"
  smsc_ceiling "$mode"
  for backend in $backends; do
    for binds in $BINDS; do
      for rep in $(seq "$REPS"); do gw_run "$mode" "$backend" "$binds" "$rep"; done
    done
  done
  stop_pid "$SMSC_PID"; SMSC_PID=
done

echo
echo "Peer alone (smpp-blaster, 1 bind, window 100, $BLAST_N submit_sm; receipts: dlr mode):"
jq -r 'select(.kind == "ceiling") |
  "  \(.mode): \(.submit_per_s) submit_sm/s" +
  (if .dlr_per_s then ", \(.dlr_received) receipts at \(.dlr_per_s)/s (to the last receipt)" else "" end) +
  ", peer CPU \(.peer_cpu_s * 1000 / .count * 1000 | round) µs/msg, blaster CPU \(.blaster_cpu_s) s"' "$RESULTS"
echo
echo "Gateway ($N messages, $CONC connections, after $WARMUP warm-up without receipts, $WARMUP_DLR with):"
printf '| mode | backend | binds | HTTP accepted/s | submit_sm at peer | submit_sm/s at peer (best second) | E2E to last submit_sm | E2E to last delivered | gateway CPU ms/msg (load / run) | gateway cores | peer CPU ms/msg | other cores | peak RSS MiB |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|---|---|\n'
jq -r 'select(.kind == "gateway") |
  def r(p): if . == null then "–" else (. * pow(10; p) | round) / pow(10; p) | tostring end;
  "| \(.mode) | \(.backend) | \(.binds) | \(.accepted_per_s | r(0)) | \(.peer_submit_sm) of \(.accepted) | \(.submit_per_s | r(0)) (\(.peer_peak_submit_per_s)) | \(.e2e_submit_per_s | r(0)) | \(.e2e_delivered_per_s | r(0)) | \(.gw_cpu_ms_per_msg_load | r(3)) / \(.gw_cpu_ms_per_msg | r(3))\(if .pg_cpu_ms_per_msg then " + PG \(.pg_cpu_ms_per_msg | r(3))" else "" end) | \(.gw_cores | r(2)) | \(.peer_cpu_ms_per_msg | r(3)) | \(.other_cores | r(2)) | \(.gw_peak_rss_mib) |"' "$RESULTS"
echo
echo "raw: $RESULTS"
