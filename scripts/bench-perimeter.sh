#!/usr/bin/env bash
# Perimeter cost on POST /v1/messages: plain HTTP vs TLS vs Redis-shared limits.
# usage: bench-perimeter.sh BIN OUTDIR
set -euo pipefail
B=$1; OUT=$2; mkdir -p "$OUT"
CERTS=$(mktemp -d)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench-ca -keyout "$CERTS/ca.key" -out "$CERTS/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout "$CERTS/key.pem" -out "$CERTS/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n' > "$CERTS/ext"
openssl x509 -req -in "$CERTS/leaf.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
  -CAcreateserial -days 2 -extfile "$CERTS/ext" -out "$CERTS/cert.pem" 2>/dev/null
run() {
  local name=$1; shift
  local scheme=$1; shift
  local dir; dir=$(mktemp -d)
  pushd "$dir" > /dev/null
  env "$@" "$B" serve --dev --listen 127.0.0.1:18443 > "$dir/out.log" 2> "$dir/err.log" &
  echo $! > "$dir/pid"
  popd > /dev/null
  for _ in $(seq 1 100); do grep -q '"key"' "$dir/out.log" 2>/dev/null && break; sleep 0.2; done
  local key; key=$(grep -o 'pcl_live_[0-9A-Za-z]*' "$dir/out.log" | head -1)
  local pid; pid=$(cat "$dir/pid")
  local extra=()
  [ "$scheme" = https ] && extra=(--ca-file "$CERTS/ca.pem")
  "$B" bench --url "$scheme://localhost:18443" --key "$key" --client reqwest "${extra[@]}" \
     --requests 20000 --concurrency 64 --warmup 2000 --pid "$pid" --json > "$OUT/$name.json" 2> "$OUT/$name.err" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  sleep 1
  rm -rf "$dir"
  echo "$name: $(python3 -c "import json; d=json.load(open('$OUT/$name.json')); l=d['latency_ms']; g=d['gateway']; print(d['accepted_msgs_per_sec'], 'p50', l['p50'], 'p99', l['p99'], 'cpu/1000', g['cpu_seconds_per_1000_msgs_load'], 'rss', g['peak_rss_mib'])" 2>&1 | tail -1)"
}
LIMITS=(PORTCULLIS_RATE_LIMIT_PER_KEY=1000000/s PORTCULLIS_RATE_LIMIT_PER_APP=1000000/s PORTCULLIS_RATE_LIMIT_PER_TENANT=1000000/s PORTCULLIS_RATE_LIMIT_PER_IP=1000000/s)
TLS=(PORTCULLIS_TLS_CERT_FILE=$CERTS/cert.pem PORTCULLIS_TLS_KEY_FILE=$CERTS/key.pem)
REDIS=(PORTCULLIS_REDIS_URL=redis://127.0.0.1:6379 PORTCULLIS_REDIS_KEY_PREFIX=bench-$RANDOM)
for round in 1 2 3 4 5; do
  run "plain-$round" http PORTCULLIS_LOG=warn
  run "plain-limits-$round" http PORTCULLIS_LOG=warn "${LIMITS[@]}"
  run "tls-$round" https PORTCULLIS_LOG=warn "${TLS[@]}"
  run "tls-redis-limits-$round" https PORTCULLIS_LOG=warn "${TLS[@]}" "${LIMITS[@]}" "${REDIS[@]}"
done
