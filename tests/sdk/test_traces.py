"""OpenTelemetry traces, received the way a collector receives them.

A small OTLP/HTTP receiver (the official `opentelemetry-proto` messages from PyPI) listens on a free port;
the gateway is pointed at it with the standard `OTEL_EXPORTER_OTLP_ENDPOINT` variable, as an operator
would, and the spans it sends are decoded and checked: one SERVER span per request in the caller's trace,
one CLIENT child per upstream attempt, GenAI semantic-convention attributes, and the attempt's span id in
the `traceparent` the upstream received.
"""

from __future__ import annotations

import http.server
import threading
import time
from typing import Any, Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from conftest import Mock, Procs, stack_config

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Receiver:
    """Collects every span POSTed to /v1/traces; answers as a collector does (an empty export response)."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Span]] = []
        self.content_types: list[str] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                with outer.lock:
                    outer.content_types.append(self.headers.get("content-type", ""))
                    for rs in req.resource_spans:
                        resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            for s in ss.spans:
                                outer.spans.append((resource, s))
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trace(self, trace_id: str, want: int, timeout: float = 15.0) -> list[Span]:
        """The spans of one trace, once at least `want` arrived (the gateway exports in batches)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                got = [s for _, s in self.spans if s.trace_id.hex() == trace_id]
            if len(got) >= want or time.monotonic() > deadline:
                return got
            time.sleep(0.05)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def traced(procs: Procs, mocks: dict[str, Mock], receiver: Receiver):
    cfg = stack_config(mocks, {})
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "gateway-under-test"}
    gw = procs.gateway(cfg, name="gateway-traced", env=env)
    yield gw
    procs.stop(gw.proc)


def attrs(s: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in s.attributes:
        kind = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, kind) if kind else None
    return out


def test_a_fallback_is_one_server_span_with_a_client_span_per_attempt_in_the_callers_trace(traced, mocks, receiver):
    mocks["openai"].reset()
    client = traced.client()
    raw = client.chat.completions.with_raw_response.create(
        model="flaky/gpt-4o-mini",
        messages=[{"role": "user", "content": "hello"}],
        extra_headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
    )
    assert raw.headers["x-switchyard-provider"] == "openai"
    request_id = raw.headers["x-request-id"]

    spans = receiver.trace(CALLER_TRACE, want=3)
    servers = [s for s in spans if s.kind == Span.SPAN_KIND_SERVER]
    clients = [s for s in spans if s.kind == Span.SPAN_KIND_CLIENT]
    assert len(servers) == 1, spans
    root = servers[0]
    # The caller's span is the parent; the attempts are the gateway span's children.
    assert root.parent_span_id.hex() == CALLER_SPAN
    assert root.name == "chat flaky/gpt-4o-mini"
    a = attrs(root)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "flaky/gpt-4o-mini"
    assert a["gen_ai.response.model"] == "gpt-4o-mini"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["switchyard.request_id"] == request_id
    assert a["http.response.status_code"] == 200
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["switchyard.fallback_index"] == 1

    assert len(clients) == 2, clients
    assert all(c.parent_span_id == root.span_id for c in clients)
    failed, served = sorted(clients, key=lambda c: c.start_time_unix_nano)
    fa, sa = attrs(failed), attrs(served)
    assert fa["switchyard.provider"] == "flaky" and fa["http.response.status_code"] == 529
    assert fa["error.type"] == "transient"
    assert failed.status.code == Status.STATUS_CODE_ERROR
    assert sa["switchyard.provider"] == "openai" and "error.type" not in sa
    assert root.start_time_unix_nano <= failed.start_time_unix_nano <= served.start_time_unix_nano
    assert served.end_time_unix_nano <= root.end_time_unix_nano + 1_000_000

    # The upstream that answered saw the same trace, with its attempt's span as parent.
    seen = [r for r in mocks["openai"].requests() if r["path"] == "/v1/chat/completions"]
    assert seen, "the openai mock recorded no request"
    assert seen[-1]["headers"]["traceparent"] == f"00-{CALLER_TRACE}-{served.span_id.hex()}-01"
    assert receiver.content_types and all(ct == "application/x-protobuf" for ct in receiver.content_types)


def test_without_a_callers_trace_the_gateway_starts_one_and_names_the_service(traced, receiver):
    client = traced.client()
    stream = client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "stream please"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    deadline = time.monotonic() + 15
    root = None
    while root is None and time.monotonic() < deadline:
        with receiver.lock:
            for resource, s in receiver.spans:
                if s.kind == Span.SPAN_KIND_SERVER and attrs(s).get("switchyard.stream") and not s.parent_span_id:
                    root = (resource, s)
        time.sleep(0.05)
    assert root is not None, "no span of the streamed request arrived"
    resource, span = root
    assert resource["service.name"] == "gateway-under-test"
    assert len(span.trace_id) == 16 and len(span.span_id) == 8
    assert attrs(span).get("switchyard.time_to_first_token_ms") is not None


def test_a_caller_that_does_not_sample_gets_no_spans(traced, receiver):
    trace = "5bf92f3577b34da6a3ce929d0e0e4737"
    client = traced.client()
    client.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "not sampled"}],
        extra_headers={"traceparent": f"00-{trace}-{CALLER_SPAN}-00"},
    )
    # A sampled request sent after it: once its spans are in, the unsampled one's would be too.
    marker = "6bf92f3577b34da6a3ce929d0e0e4738"
    client.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "sampled"}],
        extra_headers={"traceparent": f"00-{marker}-{CALLER_SPAN}-01"},
    )
    assert receiver.trace(marker, want=2)
    assert receiver.trace(trace, want=1, timeout=0) == []


def test_a_collector_that_is_down_costs_requests_nothing(procs: Procs, mocks):
    # Nothing listens on this port (bound and closed): every export fails, every request still succeeds.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    gw = procs.gateway(stack_config(mocks, {}), name="gateway-no-collector", env=env)
    try:
        client = gw.client()
        for _ in range(20):
            r = client.chat.completions.create(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
            assert r.choices[0].message.content
        deadline = time.monotonic() + 15
        dropped = 0.0
        while time.monotonic() < deadline and dropped == 0:
            from conftest import http_json

            status, text = http_json("GET", gw.url + "/metrics")
            for line in str(text).splitlines():
                if line.startswith("switchyard_trace_requests_dropped_total"):
                    dropped = float(line.split()[-1])
            time.sleep(0.2)
        assert dropped > 0, "failed exports are not counted"
    finally:
        procs.stop(gw.proc)
