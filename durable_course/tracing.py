"""Traces of a turn: client -> workflow -> activities, with OpenTelemetry, written where a learner can read them.

Temporal's `temporalio.contrib.opentelemetry.OpenTelemetryPlugin` is added from outside, as a client plugin
(workers made from that client inherit it): the agent's code knows nothing of it. With
`add_temporal_spans=True` it makes a span for each Temporal operation: the client's `StartWorkflow` and
`StartWorkflowUpdate`, the worker's `HandleUpdate`, `StartActivity` and `RunActivity`, linked into one trace
by the context Temporal carries in its headers. The spans go to a JSON-lines file (one span per line, the
OpenTelemetry SDK's own JSON) and stay in memory for `Tracing.tree()`, an indented text view to read next to
the history timeline. No collector, no network.

    tracing = Tracing.start("traces.jsonl")
    client = await tracing.client(lab.temporal.address)      # a client (and its workers) that trace
    ...
    print(tracing.tree())
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import opentelemetry.trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from temporalio.client import Client
from temporalio.contrib.opentelemetry import OpenTelemetryPlugin, create_tracer_provider

from durable_agent.server import connect


class JsonLinesExporter(SpanExporter):
    """Appends each finished span as one line of JSON to a file, and keeps it in memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.spans: list[ReadableSpan] = []
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            for span in spans:
                self.spans.append(span)
                out.write(span.to_json(indent=None) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


_provider = None  # OpenTelemetry allows one global tracer provider per process: set once, then reused
_exporter_slot: list[JsonLinesExporter] = []


@dataclass
class Tracing:
    exporter: JsonLinesExporter
    plugin: OpenTelemetryPlugin = field(default_factory=lambda: OpenTelemetryPlugin(add_temporal_spans=True))

    @classmethod
    def start(cls, path: str | Path) -> "Tracing":
        """Send every span of this process to `path` (a new file) from now on."""
        global _provider
        path = Path(path)
        path.write_text("")
        exporter = JsonLinesExporter(path)
        if _provider is None:
            _provider = create_tracer_provider()
            _provider.add_span_processor(SimpleSpanProcessor(_Forward()))
            opentelemetry.trace.set_tracer_provider(_provider)
        _exporter_slot[:] = [exporter]
        return cls(exporter)

    async def client(self, address: str, namespace: str = "default") -> Client:
        """A client that traces what it does; a worker created from it traces what it runs."""
        return await connect(address, namespace, plugins=[self.plugin])

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.spans)

    def tree(self, trace_of: str | None = None, durations: bool = False) -> str:
        """The spans as an indented tree, children under their parent, in start order (with `durations`, each
        span's milliseconds, which vary from run to run; the shape does not). `trace_of`: only the traces that
        contain a span whose attributes mention this workflow id."""
        spans = self.spans
        if trace_of:
            traces = {s.context.trace_id for s in spans if trace_of in str(dict(s.attributes or {}))}
            spans = [s for s in spans if s.context.trace_id in traces]
        ids = {s.context.span_id for s in spans}
        children: dict[Any, list[ReadableSpan]] = {}
        for span in spans:
            parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
            children.setdefault(parent, []).append(span)
        lines: list[str] = []

        def walk(parent: Any, depth: int) -> None:
            for span in sorted(children.get(parent, []), key=lambda s: s.start_time or 0):
                took = f"  {(span.end_time - span.start_time) / 1e6:.1f} ms" if durations and span.end_time else ""
                lines.append(f"{'  ' * depth}{span.name}{took}")
                walk(span.context.span_id, depth + 1)

        walk(None, 0)
        return "\n".join(lines)


class _Forward(SpanExporter):
    """The one exporter the global provider has: forwards to the current `Tracing`'s file."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return _exporter_slot[0].export(spans) if _exporter_slot else SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass
