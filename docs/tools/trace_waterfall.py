"""Draws the spans of a trace as a waterfall PNG, the way a trace view (Jaeger, Tempo) shows them:
one row per span, children under their parent, a bar from its start to its end.

    python docs/tools/trace_waterfall.py spans.json docs/trace-waterfall.png

``spans.json``: a list of spans as tests/support/otlp_receiver.py dumps them (``name``, ``service``,
``kind``, ``trace_id``, ``span_id``, ``parent_span_id``, ``start_ns``, ``end_ns``, ``status``,
``attributes``). Tests call ``render`` with ``from_sdk(...)`` of an in-memory exporter's spans
(tests/tracing/test_waterfall.py makes docs/trace-waterfall.png). Needs Pillow.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

ROW = 26
LABEL_WIDTH = 430
BAR_WIDTH = 640
MARGIN = 16
HEADER = 46
COLOURS = {
    "SERVER": (66, 133, 244),
    "CLIENT": (15, 157, 88),
    "INTERNAL": (171, 71, 188),
    "PRODUCER": (244, 160, 0),
    "CONSUMER": (0, 172, 193),
}
ERROR = (219, 68, 55)


def from_sdk(spans: Iterable[Any]) -> list[dict[str, Any]]:
    """Spans of the OpenTelemetry SDK (``ReadableSpan``, e.g. from an InMemorySpanExporter) as the
    dicts ``render`` takes."""
    out = []
    for s in spans:
        resource = getattr(s, "resource", None)
        out.append(
            {
                "name": s.name,
                "service": str(resource.attributes.get("service.name", "")) if resource is not None else "",
                "kind": s.kind.name,
                "trace_id": format(s.context.trace_id, "032x"),
                "span_id": format(s.context.span_id, "016x"),
                "parent_span_id": format(s.parent.span_id, "016x") if s.parent is not None else "",
                "start_ns": s.start_time,
                "end_ns": s.end_time,
                "status": s.status.status_code.name,
                "attributes": dict(s.attributes or {}),
            }
        )
    return out


def _ordered(spans: Sequence[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Depth-first, children after their parent by start time; spans whose parent is not among them
    are roots."""
    ids = {s["span_id"] for s in spans}
    children: dict[str, list[dict[str, Any]]] = {}
    roots = []
    for s in spans:
        if s["parent_span_id"] and s["parent_span_id"] in ids:
            children.setdefault(s["parent_span_id"], []).append(s)
        else:
            roots.append(s)
    out: list[tuple[int, dict[str, Any]]] = []

    def walk(span: dict[str, Any], depth: int) -> None:
        out.append((depth, span))
        for child in sorted(children.get(span["span_id"], []), key=lambda c: c["start_ns"]):
            walk(child, depth + 1)

    for root in sorted(roots, key=lambda r: r["start_ns"]):
        walk(root, 0)
    return out


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1: one bitmap size
        return ImageFont.load_default()


def render(spans: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Writes the waterfall of ``spans`` to ``path`` (PNG) and returns it."""
    rows = _ordered(spans)
    if not rows:
        raise ValueError("no spans to draw")
    start = min(s["start_ns"] for s in spans)
    end = max(s["end_ns"] for s in spans)
    total = max(end - start, 1)
    width = MARGIN * 2 + LABEL_WIDTH + BAR_WIDTH
    height = HEADER + ROW * len(rows) + MARGIN * 2 + ROW
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(14), _font(12)
    draw.text((MARGIN, MARGIN), title or f"trace {rows[0][1]['trace_id']}", fill="black", font=font)
    # The time axis: five ticks in milliseconds.
    x0, top = MARGIN + LABEL_WIDTH, HEADER
    for i in range(6):
        x = x0 + BAR_WIDTH * i / 5
        draw.line([(x, top - 6), (x, top + ROW * len(rows))], fill=(225, 225, 225))
        draw.text((x + 2, top - 18), f"{total * i / 5 / 1e6:.1f} ms", fill=(110, 110, 110), font=small)
    for n, (depth, span) in enumerate(rows):
        y = top + n * ROW
        if n % 2:
            draw.rectangle([(MARGIN, y), (width - MARGIN, y + ROW - 1)], fill=(247, 247, 250))
        label = span["name"]
        service = span.get("service") or ""
        draw.text((MARGIN + 14 * depth, y + 6), label, fill="black", font=small)
        left = x0 + BAR_WIDTH * (span["start_ns"] - start) / total
        right = max(left + 2, x0 + BAR_WIDTH * (span["end_ns"] - start) / total)
        colour = ERROR if span.get("status") == "ERROR" else COLOURS.get(span.get("kind", ""), (120, 120, 120))
        draw.rectangle([(left, y + 5), (right, y + ROW - 6)], fill=colour)
        duration = (span["end_ns"] - span["start_ns"]) / 1e6
        caption = f"{duration:.2f} ms" + (f"  {service}" if service and depth == 0 else "")
        caption_width = draw.textlength(caption, font=small)
        if right + 4 + caption_width <= width - MARGIN:  # after the bar
            draw.text((right + 4, y + 6), caption, fill=(80, 80, 80), font=small)
        elif left - 4 - caption_width >= x0:  # before it
            draw.text((left - 4 - caption_width, y + 6), caption, fill=(80, 80, 80), font=small)
        else:  # on it
            draw.text((left + 6, y + 6), caption, fill="white", font=small)
    legend_y = top + ROW * len(rows) + 10
    x = MARGIN
    for kind, colour in [("SERVER", COLOURS["SERVER"]), ("CLIENT (database)", COLOURS["CLIENT"]),
                         ("INTERNAL", COLOURS["INTERNAL"]), ("error", ERROR)]:  # fmt: skip
        draw.rectangle([(x, legend_y + 3), (x + 12, legend_y + 15)], fill=colour)
        draw.text((x + 18, legend_y + 2), kind, fill="black", font=small)
        x += 30 + int(draw.textlength(kind, font=small)) + 20
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "PNG", optimize=True)
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    spans = json.loads(Path(argv[0]).read_text())
    render(spans, Path(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
