#!/usr/bin/env bash
# The policy guard's cost on POST /v1/messages: the same gateway built with and without
# the guard (feature `unguarded-benchmark-only`), rounds interleaved on fresh data dirs.
#   accept:   purpose notification, scheduled into the recipients' daytime: the accept
#             path with every rule of the guard (quotas under lock, per-recipient cap,
#             links, footer, burst, quiet hours), no dispatch competing.
#   pipeline: purpose transactional, to `delivered`: the accept path plus the send
#             worker's last check.
# usage: bench-guard.sh GUARDED_BIN UNGUARDED_BIN OUTDIR [ROUNDS]
set -euo pipefail
G=$1; U=$2; OUT=$3; ROUNDS=${4:-3}; mkdir -p "$OUT"
# Seconds until the next 18:00 UTC (10:00 in San Francisco, where the bench numbers are).
AHEAD=$(python3 -c "import time; t=time.time(); d=(18*3600-(t%86400))%86400; print(int(d)+600)")
run() {
  local name=$1 bin=$2 scenario=$3
  local dir; dir=$(mktemp -d)
  pushd "$dir" > /dev/null
  env PORTCULLIS_LOG=warn "$bin" serve --dev --listen 127.0.0.1:18090 > "$dir/out.log" 2> "$dir/err.log" &
  echo $! > "$dir/pid"
  popd > /dev/null
  for _ in $(seq 1 100); do grep -q '"key"' "$dir/out.log" 2>/dev/null && break; sleep 0.2; done
  local key app tenant pid
  key=$(grep -o 'pcl_live_[0-9A-Za-z]*' "$dir/out.log" | head -1)
  app=$(grep -o '"app_id":"app_[0-9A-Za-z]*"' "$dir/out.log" | head -1 | cut -d'"' -f4)
  tenant=$(grep -o '"tenant_id":"tnt_[0-9A-Za-z]*"' "$dir/out.log" | head -1 | cut -d'"' -f4)
  pid=$(cat "$dir/pid")
  if [ "$bin" = "$G" ]; then
    # Every rule on, with limits the run stays inside.
    "$G" apps update "$app" --data-dir "$dir/data" --daily-quota 100000000 --monthly-quota 1000000000 \
      --recipient-daily-cap 25 --burst-min-per-minute 100000000 --block-url-shorteners true \
      --blocked-domains evil.com --opt-out-footer true > /dev/null
    "$G" tenants update "$tenant" --data-dir "$dir/data" --daily-quota 100000000 > /dev/null
    sleep 1.5 # the board reloads tenant settings every second
  fi
  local args=(--requests 20000 --concurrency 64 --warmup 2000 --pid "$pid" --json)
  if [ "$scenario" = accept ]; then
    args+=(--purpose notification --schedule-ahead "$AHEAD")
  else
    args+=(--purpose transactional --wait-delivered)
  fi
  "$G" bench --url http://127.0.0.1:18090 --key "$key" "${args[@]}" > "$OUT/$name.json" 2> "$OUT/$name.err" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  sleep 1
  rm -rf "$dir"
  echo "$name: $(python3 -c "import json; d=json.load(open('$OUT/$name.json')); l=d['latency_ms']; g=d['gateway']; print(d['accepted_msgs_per_sec'], 'p50', l['p50'], 'p99', l['p99'], 'cpu/1000', g['cpu_seconds_per_1000_msgs_load'], 'e2e', d.get('end_to_end_msgs_per_sec'))" 2>&1 | tail -1)"
}
for round in $(seq 1 "$ROUNDS"); do
  for scenario in accept pipeline; do
    run "unguarded-$scenario-$round" "$U" "$scenario"
    run "guarded-$scenario-$round" "$G" "$scenario"
  done
done
