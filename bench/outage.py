"""Open-loop load at a steady rate; prints one JSON line of latency percentiles and errors.

Usage: python3 bench/outage.py URL MODEL RATE SECONDS [TIMEOUT] [FIRST]

Requests are scheduled at fixed times (RATE per second) and each latency is measured from its scheduled
time, so a slow gateway cannot hide queueing behind a slow client (no coordinated omission). Each worker
thread keeps one keep-alive connection. A request counts as failed on any non-200 answer, a transport
error, or no answer within TIMEOUT seconds (12 by default, as the image service's client).

Besides the whole run, the same figures are given for the requests scheduled in its first FIRST seconds
(10 by default) under "first": the start of an outage, before any detection has had time to act.
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
first_window = float(sys.argv[6]) if len(sys.argv) > 6 else 10.0
u = urlparse(url)
body = json.dumps({"model": model, "max_tokens": 32,
                   "messages": [{"role": "user", "content": "is this frame in focus? answer yes or no"}]})
headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}

jobs: "queue.Queue[float | None]" = queue.Queue()
lock = threading.Lock()
latencies, errors, providers, hedged = [], [], {}, 0
# (seconds after the start the request was scheduled for, latency or None when it failed)
outcomes: list[tuple[float, float | None]] = []


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
                    outcomes.append((due - start, took))
                    p = resp.getheader("x-switchyard-provider", "?")
                    providers[p] = providers.get(p, 0) + 1
                    hedged += resp.getheader("x-switchyard-hedged") == "true"
                else:
                    errors.append(f"{resp.status} {data[:120]!r}")
                    outcomes.append((due - start, None))
        except Exception as e:  # a transport error or timeout is a lost request, reported as such
            with lock:
                errors.append(repr(e)[:120])
                outcomes.append((due - start, None))
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


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1)] * 1000, 1)


def summary(items):
    ok = [lat for _, lat in items if lat is not None]
    return {"requests": len(items), "errors": sum(1 for _, lat in items if lat is None), "p50_ms": pct(ok, 50),
            "p95_ms": pct(ok, 95), "p99_ms": pct(ok, 99), "max_ms": pct(ok, 100)}


first = summary([o for o in outcomes if o[0] < first_window])
print(json.dumps({"requests": n, "ok": len(latencies), "errors": len(errors), "p50_ms": pct(latencies, 50),
                  "p95_ms": pct(latencies, 95), "p99_ms": pct(latencies, 99), "max_ms": pct(latencies, 100),
                  "providers": providers, "hedged": hedged, "first": first, "error_samples": errors[:3]}))
