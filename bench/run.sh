#!/usr/bin/env bash
# Load benchmark: Switchyard in front of `switchyard mock`, next to the mock called directly, on this machine.
#
#   bash bench/run.sh                       # chat c=1, chat c=50, stream c=50, TTFB probe; ~1.5 min
#   DURATION=20 CONC=100 bash bench/run.sh
#   WORKERS=1 bash bench/run.sh             # the gateway with one worker thread (default: one per core)
#   STORE=1 bash bench/run.sh               # the gateway with --data-dir: the request log written to SQLite
#   BEDROCK=1 bash bench/run.sh             # also rows through a Bedrock mock, every request SigV4-signed
#
# Reports, per scenario and target: requests/s, p50/p90/p99 latency, errors, CPU time per request of the
# measured process (the gateway, or the mock for "direct") and its RSS (current and peak). Needs wrk
# (Debian package `wrk`), curl and python3. Everything runs on 127.0.0.1; every process started here is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONC="${CONC:-50}"
THREADS="${THREADS:-2}"
TTFB_N="${TTFB_N:-200}"
MOCK_PORT="${MOCK_PORT:-18181}"
GW_PORT="${GW_PORT:-18182}"
OUT="${OUT:-target/bench/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"

for tool in wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install -y $tool)" >&2; exit 1; }
done

cargo build --release -q -p switchyard
BIN=${CARGO_TARGET_DIR:-target}/release/switchyard
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BIN" mock --provider openai --any-model --listen "127.0.0.1:$MOCK_PORT" >"$OUT/mock.log" 2>&1 &
MOCK_PID=$!; PIDS+=("$MOCK_PID")
cat >"$OUT/switchyard.yaml" <<YAML
providers:
  openai:
    base_url: "http://127.0.0.1:$MOCK_PORT"
    keys: [{name: bench, value: sk-bench}]
YAML
BEDROCK_PORT="${BEDROCK_PORT:-18183}"
if [ -n "${BEDROCK:-}" ]; then
  # The mock checks every signature against its documented test credentials (crates/mock/src/bedrock.rs).
  "$BIN" mock --provider bedrock --listen "127.0.0.1:$BEDROCK_PORT" >"$OUT/mock-bedrock.log" 2>&1 &
  PIDS+=("$!")
  cat >>"$OUT/switchyard.yaml" <<YAML
  bedrock:
    base_url: "http://127.0.0.1:$BEDROCK_PORT"
    region: eu-central-1
    aws: {access_key_id: AKIASWITCHYARDMOCK01, secret_access_key: "switchyard/mock/SECRET+do-not-use-anywhere"}
YAML
fi
WORKER_ARGS=()
[ -n "${WORKERS:-}" ] && WORKER_ARGS=(--workers "$WORKERS")
# Without a store the request log is the in-memory ring; with one, every request is also written to SQLite.
[ -n "${STORE:-}" ] && WORKER_ARGS+=(--data-dir "$OUT/data")
SWITCHYARD_LOG=warn "$BIN" serve --config "$OUT/switchyard.yaml" --listen "127.0.0.1:$GW_PORT" "${WORKER_ARGS[@]}" >"$OUT/gateway.log" 2>&1 &
GW_PID=$!; PIDS+=("$GW_PID")
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$GW_PORT/health" >/dev/null && curl -sf "http://127.0.0.1:$MOCK_PORT/mock/stats" >/dev/null && break
  sleep 0.1
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
TICK=$(getconf CLK_TCK)

WORDS="frame from station seven shows a scratched housing on the left side near the connector please check it"
chat_body() { printf '{"model":"%s","messages":[{"role":"user","content":"%s"}]}' "$1" "$WORDS"; }
stream_body() { printf '{"model":"%s","stream":true,"messages":[{"role":"user","content":"%s"}]}' "$1" "$WORDS"; }

TABLE="$OUT/table.md"
{
  echo "| scenario | target | req/s | p50 ms | p90 ms | p99 ms | errors | CPU ms/req | RSS MiB (peak) |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
} >"$TABLE"

# run SCENARIO TARGET URL BODY CONNECTIONS THREADS PID
run() {
  local scenario=$1 target=$2 url=$3 body=$4 conns=$5 threads=$6 pid=$7
  BENCH_BODY="$body" wrk -t"$threads" -c"$conns" -d"${WARMUP}s" -s bench/post.lua "$url" >/dev/null
  local before; before=$(cpu_ticks "$pid")
  BENCH_BODY="$body" wrk -t"$threads" -c"$conns" -d"${DURATION}s" --timeout 10s -s bench/post.lua "$url" >"$OUT/$scenario-$target.txt"
  local after; after=$(cpu_ticks "$pid")
  local line; line=$(grep '^RESULT' "$OUT/$scenario-$target.txt")
  local req err p50 p90 p99 secs
  req=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$line"); err=$(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$line")
  p50=$(sed -E 's/.*p50_ms=([0-9.]+).*/\1/' <<<"$line"); p90=$(sed -E 's/.*p90_ms=([0-9.]+).*/\1/' <<<"$line")
  p99=$(sed -E 's/.*p99_ms=([0-9.]+).*/\1/' <<<"$line"); secs=$(sed -E 's/.*seconds=([0-9.]+).*/\1/' <<<"$line")
  local rps cpu rss hwm
  rps=$(awk -v r="$req" -v s="$secs" 'BEGIN {printf "%.0f", r / s}')
  cpu=$(awk -v a="$after" -v b="$before" -v t="$TICK" -v r="$req" 'BEGIN {printf "%.4f", (a - b) * 1000 / t / r}')
  rss=$(awk -v k="$(rss_kib "$pid" VmRSS)" 'BEGIN {printf "%.1f", k / 1024}')
  hwm=$(awk -v k="$(rss_kib "$pid" VmHWM)" 'BEGIN {printf "%.1f", k / 1024}')
  echo "| $scenario | $target | $rps | $p50 | $p90 | $p99 | $err | $cpu | $rss ($hwm) |" >>"$TABLE"
  echo "$scenario $target: $rps req/s p50 $p50 ms p99 $p99 ms errors $err cpu $cpu ms/req rss $rss MiB" >&2
}

DIRECT="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
GATEWAY="http://127.0.0.1:$GW_PORT/v1/chat/completions"
run "chat c=1" direct "$DIRECT" "$(chat_body gpt-4o-mini)" 1 1 "$MOCK_PID"
run "chat c=1" switchyard "$GATEWAY" "$(chat_body openai/gpt-4o-mini)" 1 1 "$GW_PID"
run "chat c=$CONC" direct "$DIRECT" "$(chat_body gpt-4o-mini)" "$CONC" "$THREADS" "$MOCK_PID"
run "chat c=$CONC" switchyard "$GATEWAY" "$(chat_body openai/gpt-4o-mini)" "$CONC" "$THREADS" "$GW_PID"
run "stream c=$CONC" direct "$DIRECT" "$(stream_body gpt-4o-mini)" "$CONC" "$THREADS" "$MOCK_PID"
run "stream c=$CONC" switchyard "$GATEWAY" "$(stream_body openai/gpt-4o-mini)" "$CONC" "$THREADS" "$GW_PID"
if [ -n "${BEDROCK:-}" ]; then
  # No direct row: a request to Bedrock must be signed, which wrk cannot do. Against the OpenAI rows above,
  # the difference in the gateway's CPU is the Converse translation plus the signature.
  BEDROCK_MODEL="bedrock/anthropic.claude-3-5-haiku-20241022-v1:0"
  run "chat c=1" "switchyard→bedrock" "$GATEWAY" "$(chat_body "$BEDROCK_MODEL")" 1 1 "$GW_PID"
  run "chat c=$CONC" "switchyard→bedrock" "$GATEWAY" "$(chat_body "$BEDROCK_MODEL")" "$CONC" "$THREADS" "$GW_PID"
  run "stream c=$CONC" "switchyard→bedrock" "$GATEWAY" "$(stream_body "$BEDROCK_MODEL")" "$CONC" "$THREADS" "$GW_PID"
fi

# Time to first token and to the end: sequential streaming requests on one keep-alive connection, the mock
# spacing its chunks 5 ms apart. A gateway that buffers would show it here.
read -r d_first d_last < <(python3 bench/ttfb.py "$DIRECT" "gpt-4o-mini+chunk_delay=5" "$TTFB_N")
read -r g_first g_last < <(python3 bench/ttfb.py "$GATEWAY" "openai/gpt-4o-mini+chunk_delay=5" "$TTFB_N")
{
  echo
  echo "Streaming, 1 connection, $TTFB_N sequential requests, 20 chunks 5 ms apart, p50: time to first token /"
  echo "to last byte: direct $d_first / $d_last ms, switchyard $g_first / $g_last ms."
} >>"$TABLE"

echo
cat "$TABLE"
echo
echo "results in $OUT"
