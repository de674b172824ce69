#!/usr/bin/env bash
# The outage figures: a primary provider in trouble, a healthy fallback with the same latency, and a client at
# a steady rate with a 12 s timeout. Two fault shapes, each under three gateway configurations:
#   shape 529    the primary answers 529 on 40% of requests (300 ± 50 ms)
#   shape slow   the primary turns slow: 3 s ± 500 ms instead of 300 ms, no errors
#   plain        retry + fallback only (health detection off)
#   detection    the defaults: outlier detection moves traffic to the fallback and probes the primary
#   detect+hedge the defaults + hedging after the primary's observed p95 (at most 10% of requests)
# and a no-fault baseline. Each run first warms the gateway up for WARMUP seconds against a healthy primary
# (as a real outage meets a gateway that has been serving), then the fault starts (PUT /mock/behavior) and
# the run is measured, reported over its first FIRST seconds (the start of the outage) and as a whole: client latency percentiles, failed requests, who served, and upstream calls per
# request (the extra load that retries, probes and hedges cost).
#
#   bash bench/outage.sh                    # RATE=15 req/s for DURATION=60 s per run, ~8 minutes
#   RATE=40 DURATION=30 bash bench/outage.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RATE="${RATE:-15}"
SECONDS_PER_RUN="${DURATION:-60}"
FIRST="${FIRST:-10}"
WARMUP="${WARMUP:-10}"
SLOW_MS="${SLOW_MS:-3000}"
SLOW_JITTER_MS="${SLOW_JITTER_MS:-500}"
LATENCY_MS="${LATENCY_MS:-300}"
JITTER_MS="${JITTER_MS:-50}"
FAULT_RATE="${FAULT_RATE:-0.4}"
BASE_PORT="${BASE_PORT:-18300}"
OUT="${OUT:-target/bench/outage-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"

cargo build --release -q -p switchyard
BIN=${CARGO_TARGET_DIR:-target}/release/switchyard
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

PRIMARY=$((BASE_PORT + 1)); FALLBACK=$((BASE_PORT + 2)); GW=$((BASE_PORT + 3))
mock_start() { # port fault_rate [latency_ms jitter_ms]
  "$BIN" mock --provider openai --any-model --listen "127.0.0.1:$1" --latency-ms "${3:-$LATENCY_MS}" \
    --latency-jitter-ms "${4:-$JITTER_MS}" --fault-rate "$2" --fault-codes 529 >>"$OUT/mock-$1.log" 2>&1 &
  echo $!
}
stats() { curl -s "http://127.0.0.1:$1/mock/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["by_path"].get("/v1/chat/completions", 0))'; }

TABLE="$OUT/table.md"
{
  echo "| scenario | window | requests | errors | p50 ms | p95 ms | p99 ms | max ms | served by primary / fallback | upstream calls per request | hedged |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"
} >"$TABLE"

run() { # name fault_rate primary_latency_ms primary_jitter_ms provider-extra route-extra
  local name=$1 fault=$2 plat=$3 pjit=$4 pextra=$5 rextra=$6
  local mp mf gp
  mp=$(mock_start "$PRIMARY" 0); mf=$(mock_start "$FALLBACK" 0); PIDS+=("$mp" "$mf")
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
  python3 bench/outage.py "http://127.0.0.1:$GW/v1/chat/completions" primary/vlm "$RATE" "$WARMUP" >"$OUT/$name-warmup.json"
  curl -sf -X PUT "http://127.0.0.1:$PRIMARY/mock/behavior" -H 'content-type: application/json' \
    -d "{\"latency_ms\": $plat, \"latency_jitter_ms\": $pjit, \"fault_rate\": $fault, \"fault_codes\": [529]}" >/dev/null
  curl -sf -X POST "http://127.0.0.1:$PRIMARY/mock/reset" >/dev/null
  curl -sf -X POST "http://127.0.0.1:$FALLBACK/mock/reset" >/dev/null
  local result; result=$(python3 bench/outage.py "http://127.0.0.1:$GW/v1/chat/completions" primary/vlm "$RATE" "$SECONDS_PER_RUN" 12 "$FIRST")
  echo "$result" >"$OUT/$name.json"
  local up; up=$(( $(stats "$PRIMARY") + $(stats "$FALLBACK") ))
  python3 - "$name" "$up" "$result" "$FIRST" >>"$TABLE" <<'PY'
import json, sys
name, upstream, r, first = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
p, f = r["providers"], r["first"]
print(f"| {name} | first {first} s | {f['requests']} | {f['errors']} | {f['p50_ms']} | {f['p95_ms']} | {f['p99_ms']} | {f['max_ms']} | | | |")
print(f"| {name} | all | {r['requests']} | {r['errors']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['max_ms']} | "
      f"{p.get('primary', 0)} / {p.get('fallback', 0)} | {upstream / r['requests']:.2f} | {r['hedged']} |")
PY
  echo "$name: $result" >&2
  kill "$gp" "$mp" "$mf" 2>/dev/null || true; wait "$gp" "$mp" "$mf" 2>/dev/null || true
}

PLAIN="    health: {enabled: false}"
HEDGE="    hedge: {after: p95, floor: 200ms, max_share: 0.1}"
SCENARIOS="${SCENARIOS:-no-fault 529-plain 529-detection 529-detect+hedge slow-plain slow-detection slow-detect+hedge}"
for sc in $SCENARIOS; do
  case $sc in
    no-fault) run "$sc" 0 "$LATENCY_MS" "$JITTER_MS" "" "" ;;
    529-plain) run "$sc" "$FAULT_RATE" "$LATENCY_MS" "$JITTER_MS" "$PLAIN" "" ;;
    529-detection) run "$sc" "$FAULT_RATE" "$LATENCY_MS" "$JITTER_MS" "" "" ;;
    529-detect+hedge) run "$sc" "$FAULT_RATE" "$LATENCY_MS" "$JITTER_MS" "" "$HEDGE" ;;
    slow-plain) run "$sc" 0 "$SLOW_MS" "$SLOW_JITTER_MS" "$PLAIN" "" ;;
    slow-detection) run "$sc" 0 "$SLOW_MS" "$SLOW_JITTER_MS" "" "" ;;
    slow-detect+hedge) run "$sc" 0 "$SLOW_MS" "$SLOW_JITTER_MS" "" "$HEDGE" ;;
    *) echo "unknown scenario $sc" >&2; exit 2 ;;
  esac
done

echo
echo "Primary: ${LATENCY_MS} ms ± ${JITTER_MS} ms, 529 on $(python3 -c "print(int($FAULT_RATE*100))")% of requests (shape 529) or ${SLOW_MS} ms ± ${SLOW_JITTER_MS} ms (shape slow);"
echo "fallback: ${LATENCY_MS} ms ± ${JITTER_MS} ms, no faults; client: $RATE req/s for ${SECONDS_PER_RUN} s per run, 12 s timeout."
cat "$TABLE"
echo "results in $OUT"
