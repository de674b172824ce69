"""Closed-loop soak: CONNECTIONS threads, each with its own keep-alive connection, send a mix of requests
back to back for SECONDS while the gateway's memory is sampled; prints one JSON object.

Usage: python3 bench/soak.py BASE_URL GATEWAY_PID SECONDS [CONNECTIONS] [SAMPLE_EVERY]

The mix is what a busy gateway meets over a day, hostile parts included, so that a leak on any path shows
as memory that keeps growing: complete answers, streams read to the end, streams the client abandons after
the first chunk, embeddings, an inline image, malformed JSON, an unknown model, and a request cut off in the
middle of its body. Memory is VmRSS from /proc/PID/status (and VmHWM, the peak) every SAMPLE_EVERY seconds.
"""
import http.client
import json
import socket
import sys
import threading
import time
from urllib.parse import urlparse

base, pid, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
connections = int(sys.argv[4]) if len(sys.argv) > 4 else 20
sample_every = float(sys.argv[5]) if len(sys.argv) > 5 else 10.0
u = urlparse(base)
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-soak"}
# A 1x1 PNG as a data URL: the image path without a network fetch.
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGA"
       "WjR9awAAAABJRU5ErkJggg==")


def chat(stream=False, content="is this frame in focus?", model="openai/gpt-4o-mini"):
    return json.dumps({"model": model, "max_tokens": 32, "stream": stream,
                       "messages": [{"role": "user", "content": content}]})


MIX = [
    ("chat", "/v1/chat/completions", chat()),
    ("stream", "/v1/chat/completions", chat(stream=True)),
    ("stream-abandoned", "/v1/chat/completions", chat(stream=True)),
    ("embeddings", "/v1/embeddings", json.dumps({"model": "openai/text-embedding-3-small", "input": ["frame 17"]})),
    ("image", "/v1/chat/completions", json.dumps({"model": "openai/gpt-4o-mini", "max_tokens": 16, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "caption"}, {"type": "image_url", "image_url": {"url": PNG}}]}]})),
    ("malformed", "/v1/chat/completions", '{"model": "openai/gpt-4o-mini", "messages": [}'),
    ("unknown-model", "/v1/chat/completions", chat(model="nowhere/none")),
    ("cut-body", "/v1/chat/completions", chat()),
]

lock = threading.Lock()
counts: dict[str, dict[str, int]] = {}
stop_at = time.monotonic() + seconds


def count(name, outcome):
    with lock:
        counts.setdefault(name, {}).setdefault(outcome, 0)
        counts[name][outcome] += 1


def cut_body(body):
    # Declares the whole body, sends half, and hangs up: the gateway must let go of the connection.
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n")
    s.sendall(head.encode() + body[: len(body) // 2].encode())
    s.close()


def worker(i):
    conn = None
    n = i
    while time.monotonic() < stop_at:
        name, path, body = MIX[n % len(MIX)]
        n += 1
        if name == "cut-body":
            try:
                cut_body(body)
                count(name, "sent")
            except OSError as e:
                count(name, f"error {type(e).__name__}")
            continue
        try:
            if conn is None:
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            conn.request("POST", path, body=body, headers=HEADERS)
            resp = conn.getresponse()
            if name == "stream-abandoned":
                resp.read(64)
                conn.close()
                conn = None
            else:
                resp.read()
            count(name, str(resp.status))
        except (OSError, http.client.HTTPException) as e:
            count(name, f"error {type(e).__name__}")
            if conn is not None:
                conn.close()
            conn = None


def memory():
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                fields[k] = int(v.split()[0]) // 1024
    return fields


samples = [{"t": 0, **memory()}]
threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
started = time.monotonic()
for t in threads:
    t.start()
while time.monotonic() < stop_at:
    time.sleep(min(sample_every, max(0.0, stop_at - time.monotonic())))
    samples.append({"t": round(time.monotonic() - started), **memory()})
for t in threads:
    t.join(timeout=35)
total = sum(sum(v.values()) for v in counts.values())
print(json.dumps({
    "seconds": seconds, "connections": connections, "requests": total,
    "requests_per_s": round(total / seconds, 1),
    "rss_mib_start": samples[0]["VmRSS"], "rss_mib_after_1min": next((s["VmRSS"] for s in samples if s["t"] >= 60), None),
    "rss_mib_end": samples[-1]["VmRSS"], "rss_mib_peak": samples[-1]["VmHWM"],
    "by_kind": counts, "samples": samples,
}))
