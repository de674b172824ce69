#!/usr/bin/env bash
# Soak benchmark: the release gateway in front of `switchyard mock` for DURATION seconds (default 600) under
# CONNECTIONS (20) closed-loop connections sending a mix of good and hostile requests (bench/soak.py); reports
# the gateway's RSS at the start, after the first minute, at the end, and its peak. Memory that keeps growing
# between the first minute and the end is a leak.
#
#   bash bench/soak.sh                      # 10 minutes
#   DURATION=60 bash bench/soak.sh          # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-600}"
CONNECTIONS="${CONNECTIONS:-20}"
MOCK_PORT="${MOCK_PORT:-18401}"
GW_PORT="${GW_PORT:-18402}"
OUT="${OUT:-target/bench/soak-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"

cargo build --release -q -p switchyard
BIN=${CARGO_TARGET_DIR:-target}/release/switchyard
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BIN" mock --provider openai --any-model --listen "127.0.0.1:$MOCK_PORT" --latency-ms 5 >"$OUT/mock.log" 2>&1 &
PIDS+=($!)
cat >"$OUT/switchyard.yaml" <<YAML
providers:
  openai:
    base_url: "http://127.0.0.1:$MOCK_PORT"
    keys: [{name: soak, value: sk-soak-upstream}]
YAML
SWITCHYARD_LOG=error "$BIN" serve --config "$OUT/switchyard.yaml" --listen "127.0.0.1:$GW_PORT" >"$OUT/gateway.log" 2>&1 &
GW_PID=$!; PIDS+=("$GW_PID")
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$GW_PORT/health" >/dev/null && break; sleep 0.1; done

python3 bench/soak.py "http://127.0.0.1:$GW_PORT" "$GW_PID" "$DURATION" "$CONNECTIONS" >"$OUT/soak.json"
python3 - "$OUT/soak.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['requests']} requests in {r['seconds']:.0f} s over {r['connections']} connections ({r['requests_per_s']}/s)")
print(f"RSS MiB: start {r['rss_mib_start']}, after 1 min {r['rss_mib_after_1min']}, end {r['rss_mib_end']}, peak {r['rss_mib_peak']}")
for k, v in sorted(r["by_kind"].items()):
    print(f"  {k}: {v}")
PY
kill -0 "$GW_PID" 2>/dev/null || { echo "soak: the gateway died" >&2; exit 1; }
echo "results in $OUT"
