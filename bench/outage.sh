#!/usr/bin/env bash
# The 529-outage figure: a primary provider answering 529 on 40% of requests with ~300 ms latency, a healthy
# fallback, and a client at a steady rate with a 12 s timeout. Four gateway configurations:
#   no-fault       the primary healthy (baseline), plain retry + fallback
#   retry          fault on, retry + fallback, no circuit breaker
#   breaker        fault on, retry + fallback + circuit breaker (defaults)
#   breaker+hedge  fault on, as above + hedging after the primary's observed p95 (at most 10% of requests)
# Prints a markdown table: client latency percentiles and errors, who served, and upstream calls per request
# (the extra load that retries and hedging cost).
#
#   bash bench/outage.sh                    # RATE=20 req/s for DURATION=30 s per scenario, ~3 minutes
#   RATE=40 DURATION=60 bash bench/outage.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RATE="${RATE:-20}"
SECONDS_PER_RUN="${DURATION:-30}"
LATENCY_MS="${LATENCY_MS:-300}"
JITTER_MS="${JITTER_MS:-50}"
FAULT_RATE="${FAULT_RATE:-0.4}"
BASE_PORT="${BASE_PORT:-18300}"
OUT="${OUT:-target/bench/outage-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"

cargo build --release -q -p switchyard
BIN=target/release/switchyard
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

PRIMARY=$((BASE_PORT + 1)); FALLBACK=$((BASE_PORT + 2)); GW=$((BASE_PORT + 3))
mock_start() { # port fault_rate
  "$BIN" mock --provider openai --any-model --listen "127.0.0.1:$1" --latency-ms "$LATENCY_MS" \
    --latency-jitter-ms "$JITTER_MS" --fault-rate "$2" --fault-codes 529 >>"$OUT/mock-$1.log" 2>&1 &
  echo $!
}
stats() { curl -s "http://127.0.0.1:$1/mock/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["by_path"].get("/v1/chat/completions", 0))'; }

TABLE="$OUT/table.md"
{
  echo "| scenario | requests | errors | p50 ms | p95 ms | p99 ms | max ms | served by primary / fallback | upstream calls per request | hedged |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"
} >"$TABLE"

run() { # name fault_rate provider-extra route-extra
  local name=$1 fault=$2 pextra=$3 rextra=$4
  local mp mf gp
  mp=$(mock_start "$PRIMARY" "$fault"); mf=$(mock_start "$FALLBACK" 0); PIDS+=("$mp" "$mf")
  cat >"$OUT/$name.yaml" <<YAML
routing:
  deadline: 11s
providers:
  primary:
    type: openai
    base_url: "http://127.0.0.1:$PRIMARY"
    keys: [{value: sk-primary}]
$pextra
  fallback:
    type: openai
    base_url: "http://127.0.0.1:$FALLBACK"
    keys: [{value: sk-fallback}]
routes:
  - models: ["primary/vlm"]
    fallbacks: ["fallback/vlm"]
$rextra
YAML
  SWITCHYARD_LOG=error "$BIN" serve --config "$OUT/$name.yaml" --listen "127.0.0.1:$GW" >"$OUT/gateway-$name.log" 2>&1 &
  gp=$!; PIDS+=("$gp")
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$GW/health" >/dev/null && break; sleep 0.1; done
  local result; result=$(python3 bench/outage.py "http://127.0.0.1:$GW/v1/chat/completions" primary/vlm "$RATE" "$SECONDS_PER_RUN")
  echo "$result" >"$OUT/$name.json"
  local up; up=$(( $(stats "$PRIMARY") + $(stats "$FALLBACK") ))
  python3 - "$name" "$up" "$result" >>"$TABLE" <<'PY'
import json, sys
name, upstream, r = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
p = r["providers"]
print(f"| {name} | {r['requests']} | {r['errors']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['max_ms']} | "
      f"{p.get('primary', 0)} / {p.get('fallback', 0)} | {upstream / r['requests']:.2f} | {r['hedged']} |")
PY
  echo "$name: $result" >&2
  kill "$gp" "$mp" "$mf" 2>/dev/null || true; wait "$gp" "$mp" "$mf" 2>/dev/null || true
}

NO_BREAKER="    circuit_breaker: {enabled: false}"
HEDGE="    hedge: {after: p95, floor: 200ms, max_share: 0.1}"
run no-fault 0 "$NO_BREAKER" ""
run retry "$FAULT_RATE" "$NO_BREAKER" ""
run breaker "$FAULT_RATE" "" ""
run breaker+hedge "$FAULT_RATE" "" "$HEDGE"

echo
echo "Primary: ${LATENCY_MS} ms ± ${JITTER_MS} ms, 529 on $(python3 -c "print(int($FAULT_RATE*100))")% of requests; fallback: same latency, no faults;"
echo "client: $RATE req/s for ${SECONDS_PER_RUN} s per scenario, 12 s timeout."
cat "$TABLE"
echo "results in $OUT"
