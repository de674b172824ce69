"""Open-loop load at a steady rate; prints one JSON line of latency percentiles and errors.

Usage: python3 bench/outage.py URL MODEL RATE SECONDS [TIMEOUT]

Requests are scheduled at fixed times (RATE per second) and each latency is measured from its scheduled
time, so a slow gateway cannot hide queueing behind a slow client (no coordinated omission). Each worker
thread keeps one keep-alive connection. A request counts as failed on any non-200 answer, a transport
error, or no answer within TIMEOUT seconds (12 by default, as the image service's client).
"""
import http.client
import json
import queue
import sys
import threading
import time
from urllib.parse import urlparse

url, model, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 12.0
u = urlparse(url)
body = json.dumps({"model": model, "max_tokens": 32,
                   "messages": [{"role": "user", "content": "is this frame in focus? answer yes or no"}]})
headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}

jobs: "queue.Queue[float | None]" = queue.Queue()
lock = threading.Lock()
latencies, errors, providers, hedged = [], [], {}, 0


def worker():
    global hedged
    conn = None
    while True:
        due = jobs.get()
        if due is None:
            return
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        try:
            if conn is None:
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
            conn.request("POST", u.path, body, headers)
            resp = conn.getresponse()
            data = resp.read()
            took = time.perf_counter() - due
            with lock:
                if resp.status == 200 and took <= timeout:
                    latencies.append(took)
                    p = resp.getheader("x-switchyard-provider", "?")
                    providers[p] = providers.get(p, 0) + 1
                    hedged += resp.getheader("x-switchyard-hedged") == "true"
                else:
                    errors.append(f"{resp.status} {data[:120]!r}")
        except Exception as e:  # a transport error or timeout is a lost request, reported as such
            with lock:
                errors.append(repr(e)[:120])
            conn = None


n = int(rate * seconds)
workers = [threading.Thread(target=worker, daemon=True) for _ in range(min(256, max(8, int(rate * timeout))))]
for w in workers:
    w.start()
start = time.perf_counter() + 0.2
for i in range(n):
    jobs.put(start + i / rate)
for _ in workers:
    jobs.put(None)
for w in workers:
    w.join(timeout + seconds + 5)


def pct(p):
    if not latencies:
        return None
    s = sorted(latencies)
    return round(s[min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1)] * 1000, 1)


print(json.dumps({"requests": n, "ok": len(latencies), "errors": len(errors), "p50_ms": pct(50), "p95_ms": pct(95),
                  "p99_ms": pct(99), "max_ms": pct(100), "providers": providers, "hedged": hedged,
                  "error_samples": errors[:3]}))
