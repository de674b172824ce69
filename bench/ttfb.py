"""Time to first token and to the end of a stream, over one keep-alive connection.

Usage: python3 bench/ttfb.py URL MODEL N
Prints: "<p50 first-token ms> <p50 last-byte ms>" where the first token is the first SSE chunk carrying
non-empty `delta.content` (an opening role-only chunk is not a token).
"""
import http.client
import json
import statistics
import sys
import time
from urllib.parse import urlparse

url, model, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
u = urlparse(url)
conn = http.client.HTTPConnection(u.hostname, u.port)
body = json.dumps({"model": model, "stream": True,
                   "messages": [{"role": "user", "content": " ".join(["word"] * 18)}]})
headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
first, last = [], []
for _ in range(n):
    t0 = time.perf_counter()
    conn.request("POST", u.path, body, headers)
    resp = conn.getresponse()
    if resp.status != 200:
        sys.exit(f"ttfb: HTTP {resp.status}: {resp.read()[:200]!r}")
    t_first = None
    while True:
        line = resp.readline()  # decodes the chunked framing
        if not line:
            break
        if line.startswith(b"data: ") and t_first is None and line[6:].strip() != b"[DONE]":
            chunk = json.loads(line[6:])
            if any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                t_first = time.perf_counter()
    t_end = time.perf_counter()
    first.append((t_first or t_end) - t0)
    last.append(t_end - t0)
print(f"{statistics.median(first) * 1000:.2f} {statistics.median(last) * 1000:.2f}")
