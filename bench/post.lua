-- wrk script for bench/run.sh: POSTs $BENCH_BODY as JSON and prints one machine-readable summary line.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.body = os.getenv("BENCH_BODY")

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format("RESULT requests=%d errors=%d p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f seconds=%.3f\n",
    summary.requests, errors, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, summary.duration / 1e6))
end
