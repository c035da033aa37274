"""The report of one run: `latency.png`, `timeline.png` and `report.html` in its run directory.

Owns: drawing (matplotlib, Agg backend: no display, no network) and the HTML page, both from
what the run directory already holds (history.jsonl, run.json, results.json). It must not judge:
verdicts come from results.json, written by the checkers. Plots follow Jepsen's: latency of every
operation over time, coloured by outcome (ok blue, info orange, fail pink), one marker per
operation kind, faults shaded with one colour and one band per fault kind.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 (the backend is chosen first)
from matplotlib.patches import Patch  # noqa: E402

from jepsen_lite.history import Op, is_nemesis, load_history  # noqa: E402

REPORT_FILES = ("latency.png", "timeline.png", "report.html")
OUTCOME_COLORS = {"ok": "#81BFFC", "info": "#FFA400", "fail": "#FF1E90"}  # Jepsen's
KIND_COLORS = {"kill": "#E9A3A3", "pause": "#A3C9E9", "restart": "#C7E9A3", "partition": "#D9B3F0",
               "disk-full": "#F0D9A3", "apply-fail": "#A3E9DF", "membership": "#F0A3D0"}
OTHER_KIND_COLOR = "#DDDDDD"
MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*", "<", ">")
DPI = 110
JSON_DETAIL_CHARS_MAX = 20_000
NEMESIS_ROWS_MAX = 500


@dataclass(frozen=True)
class TimedOp:
    """A client operation with real times in seconds since the start of the history; an `info`
    op keeps the time its completion was recorded (None if it never completed)."""

    process: int | str
    node: str
    f: str
    outcome: str
    call_s: float
    return_s: float | None


@dataclass(frozen=True)
class FaultSpan:
    kind: str
    label: str
    start_s: float
    end_s: float


def timed_ops(history: Sequence[Op], origin_ns: int) -> list[TimedOp]:
    """Pairs each client invocation with its completion per process (nemesis records skipped)."""
    pending: dict[int | str, Op] = {}
    done: list[TimedOp] = []
    for op in history:
        if is_nemesis(op):
            continue
        if op.type == "invoke":
            pending[op.process] = op
        elif op.process in pending:
            inv = pending.pop(op.process)
            done.append(TimedOp(inv.process, inv.node, inv.f, op.type, (inv.time_ns - origin_ns) / 1e9,
                                (op.time_ns - origin_ns) / 1e9))
    done += [TimedOp(inv.process, inv.node, inv.f, "info", (inv.time_ns - origin_ns) / 1e9, None)
             for inv in pending.values()]
    return done


def fault_spans(history: Sequence[Op], origin_ns: int) -> list[FaultSpan]:
    """Each fault from its `<kind>-start` invocation to the next `-stop` or `heal` completion;
    one still open at the end lasts until the last record."""
    spans: list[FaultSpan] = []
    opened: Op | None = None
    end_ns = max((op.time_ns for op in history), default=origin_ns)
    for op in (o for o in history if is_nemesis(o)):
        if op.f.endswith("-start") and op.type == "invoke" and opened is None:
            opened = op
        elif (op.f.endswith("-stop") or op.f == "heal") and op.type != "invoke" and opened is not None:
            spans.append(_span(opened, op.time_ns, origin_ns))
            opened = None
    if opened is not None:
        spans.append(_span(opened, end_ns, origin_ns))
    return spans


def _span(start: Op, end_ns: int, origin_ns: int) -> FaultSpan:
    kind = start.f.removesuffix("-start")
    mode = start.value.get("mode") if isinstance(start.value, dict) else None
    label = f"{kind} {mode} {start.node}" if mode else f"{kind} {start.node}"
    return FaultSpan(kind, label, (start.time_ns - origin_ns) / 1e9, (end_ns - origin_ns) / 1e9)


def _heal_times(history: Sequence[Op], origin_ns: int) -> list[float]:
    heals = [op for op in history if is_nemesis(op) and op.f == "heal" and op.type == "invoke"]
    return [(op.time_ns - origin_ns) / 1e9 for op in heals]


# ---------------------------------------------------------------------- plots


def _shade_faults(ax: Any, spans: Sequence[FaultSpan], heals: Sequence[float]) -> None:
    for span in spans:
        ax.axvspan(span.start_s, span.end_s, color=_kind_color(span.kind), alpha=0.35, lw=0)
    for t in heals:
        ax.axvline(t, color="#555555", ls="--", lw=0.8)


def _draw_bands(ax: Any, spans: Sequence[FaultSpan], heals: Sequence[float]) -> None:
    """One band per fault kind, as Jepsen draws nemesis activity above its plots."""
    kinds = sorted({s.kind for s in spans})
    for row, kind in enumerate(kinds):
        bars = [(s.start_s, max(s.end_s - s.start_s, 1e-3)) for s in spans if s.kind == kind]
        ax.broken_barh(bars, (row + 0.15, 0.7), color=_kind_color(kind), edgecolor="#444444", lw=0.5)
    for t in heals:
        ax.axvline(t, color="#555555", ls="--", lw=0.8)
    labels = kinds or ["no faults"]
    ax.set_yticks([r + 0.5 for r in range(len(labels))], labels, fontsize=8)
    ax.set_ylim(len(labels), 0)
    ax.tick_params(axis="x", labelbottom=False)
    ax.set_title("nemesis", loc="left", fontsize=9)


def _figure(lanes: int) -> tuple[Any, Any, Any]:
    height = 1.2 + max(3.5, 0.32 * lanes)
    fig, (band_ax, ax) = plt.subplots(2, 1, sharex=True, figsize=(11, height + 1.0),
                                      gridspec_kw={"height_ratios": [1.0, height]})
    return fig, band_ax, ax


def plot_latency(ops: Sequence[TimedOp], spans: Sequence[FaultSpan], heals: Sequence[float], path: Path) -> None:
    """Latency of every completed operation against its call time, log scale."""
    fig, band_ax, ax = _figure(0)
    _draw_bands(band_ax, spans, heals)
    _shade_faults(ax, spans, heals)
    fs = sorted({op.f for op in ops})
    for i, f in enumerate(fs):
        for outcome, color in OUTCOME_COLORS.items():
            pts = [(op.call_s, max((op.return_s - op.call_s) * 1e3, 0.01)) for op in ops
                   if op.f == f and op.outcome == outcome and op.return_s is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.scatter(xs, ys, s=12, marker=MARKERS[i % len(MARKERS)], color=color, alpha=0.8,
                           edgecolors="none", label=f"{f} {outcome}")
    ax.set_yscale("log")
    ax.set_xlabel("time since the first record (s)")
    ax.set_ylabel("latency (ms)")
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, spans)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _kind_color(kind: str) -> str:
    return KIND_COLORS.get(kind, OTHER_KIND_COLOR)


def _legend(ax: Any, spans: Sequence[FaultSpan], handles: list[Any] | None = None) -> None:
    """Outside the plot, right: the plotted series (or `handles`), then one patch per fault kind."""
    handles = ax.get_legend_handles_labels()[0] if handles is None else handles
    handles += [Patch(color=_kind_color(k), alpha=0.5, label=k) for k in sorted({s.kind for s in spans})]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _lane(op: TimedOp, concurrency: int) -> str:
    if isinstance(op.process, int):
        return f"client {op.process % concurrency} → {op.node}"
    return str(op.process)


def plot_timeline(ops: Sequence[TimedOp], spans: Sequence[FaultSpan], heals: Sequence[float],
                  concurrency: int, path: Path) -> None:
    """One lane per client thread (process mod concurrency, bound to one node) and per final
    reader; each operation a bar from call to completion, coloured by outcome."""
    lanes = sorted({_lane(op, concurrency) for op in ops}, key=lambda name: (not name.startswith("client"), name))
    row = {name: i for i, name in enumerate(lanes)}
    end_s = max([op.return_s or op.call_s for op in ops] + [s.end_s for s in spans] + [1.0])
    min_width_s = end_s / 800  # a 5 ms op must still show as a line
    fig, band_ax, ax = _figure(len(lanes))
    _draw_bands(band_ax, spans, heals)
    _shade_faults(ax, spans, heals)
    for outcome, color in OUTCOME_COLORS.items():
        for name in lanes:
            bars = [(op.call_s, max((end_s if op.return_s is None else op.return_s) - op.call_s, min_width_s))
                    for op in ops if op.outcome == outcome and _lane(op, concurrency) == name]
            if bars:
                ax.broken_barh(bars, (row[name] + 0.15, 0.7), color=color, edgecolor=color, lw=0.3)
    ax.set_yticks([i + 0.5 for i in range(len(lanes))], lanes, fontsize=8)
    ax.set_ylim(max(len(lanes), 1), 0)
    ax.set_xlabel("time since the first record (s)")
    _legend(ax, spans, [Patch(color=c, label=o) for o, c in OUTCOME_COLORS.items()])
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


# ----------------------------------------------------------------------- html


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else json.dumps(value, default=str))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c) if c is not None else ''}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _json_details(summary: str, value: Any) -> str:
    text = json.dumps(value, indent=2, default=str)
    if len(text) > JSON_DETAIL_CHARS_MAX:
        text = text[:JSON_DETAIL_CHARS_MAX] + "\n... (truncated; see results.json)"
    return f"<details><summary>{_e(summary)}</summary><pre>{html.escape(text)}</pre></details>"


def _verdicts_html(results: dict[str, Any]) -> str:
    rows = []
    for name, verdict in results.get("verdicts", {}).items():
        detail = results.get("checkers", {}).get(name)
        rows.append(f"<tr><td>{_e(name)}</td><td class='{_e(verdict)}'>{_e(verdict)}</td><td>"
                    f"{_json_details('details', detail) if detail is not None else ''}</td></tr>")
    return f"<table><tr><th>checker</th><th>verdict</th><th></th></tr>{''.join(rows)}</table>"


def _stats_html(stats: dict[str, Any]) -> str:
    cols = ("count", "ok", "fail", "info", "availability", "latency_ms_p50", "latency_ms_p95",
            "latency_ms_p99", "latency_ms_max")
    rows: list[list[Any]] = []
    for phase in ("quiet", "fault", "final"):
        s = stats.get(phase)
        if not s:
            continue
        rows.append([phase, "all", *(s.get(c) for c in cols)])
        rows += [[phase, f, *(sub.get(c) for c in cols)] for f, sub in s.get("by_f", {}).items()]
    extra = (f"<p>fault intervals: {_e(stats.get('fault_intervals'))}, "
             f"time under faults: {_e(stats.get('fault_time_s'))} s</p>")
    return _table(("phase", "f", *cols), rows) + extra


STUCK_COLUMNS = ("id", "process", "node", "f", "key", "input", "output", "outcome", "call_ns", "return_ns")


def _explanation_html(results: dict[str, Any]) -> str:
    """An invalid linearizability result: the ops that cannot be ordered after the prefix."""
    parts = []
    for name, checker in results.get("checkers", {}).items():
        explanation = checker.get("explanation") if isinstance(checker, dict) else None
        if not explanation:
            continue
        stuck = [[op.get(c) for c in STUCK_COLUMNS] for op in explanation.get("stuck", [])]
        parts.append(
            f"<h3>{_e(name)}: key {_e(explanation.get('key'))}</h3><p>The longest linearizable prefix has "
            f"{_e(explanation.get('prefix_length'))} ops; state after it: "
            f"<code>{_e(explanation.get('state_after_prefix'))}</code>. None of these ops, which real time "
            "allows next, is legal in that state:</p>" + _table(STUCK_COLUMNS, stuck)
            + _json_details("the tail of the prefix", explanation.get("prefix_tail")))
    return "<h2>Why it is invalid</h2>" + "".join(parts) if parts else ""


def _schedule_html(notes: dict[str, Any], history: Sequence[Op], origin_ns: int) -> str:
    planned = [[f.get("kind"), f.get("mode"), ",".join(f.get("targets", [])), f.get("start_s"), f.get("end_s")]
               for f in notes.get("schedule", [])]
    actions = [[round((op.time_ns - origin_ns) / 1e9, 3), op.f, op.type, op.node, op.value, op.error]
               for op in history if is_nemesis(op)][:NEMESIS_ROWS_MAX]
    return ("<h2>Fault schedule (seeded)</h2><p>Times relative to the start of the workload; a partition's "
            "targets are the seeded order that fixes its shape, a <code>leader</code> mode is resolved when the "
            "fault starts.</p>" + _table(("kind", "mode", "targets", "start_s", "end_s"), planned)
            + "<h2>Nemesis actions (as recorded)</h2>"
            + _table(("t (s)", "f", "type", "node", "value", "error"), actions))


def _elections_html(results: dict[str, Any]) -> str:
    """The elections the status monitor saw, and those outside the fault windows."""
    checker = results.get("checkers", {}).get("elections")
    if not isinstance(checker, dict) or checker.get("elections") is None:
        return ""
    rows = [[e.get("kind"), e.get("node"), e.get("term"), e.get("count"), e.get("between_s")]
            for e in checker.get("outside", [])]
    return ("<h2>Elections</h2>"
            f"<p>{_e(checker['elections'])} new terms and {_e(checker['leader_changes'])} leader changes seen in "
            f"{_e(checker['samples'])} status samples; outside the fault windows (each extended by "
            f"{_e(checker['grace_s'])} s): <b>{_e(checker['elections_outside_windows'])}</b> new terms, "
            f"<b>{_e(checker['leader_changes_outside_windows'])}</b> leader changes.</p>"
            + (_table(("kind", "node", "term", "count", "between (s)"), rows) if rows else ""))


STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1300px}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left;vertical-align:top}
.valid{background:#c8f0c8}.invalid{background:#f7b5b5}.unknown{background:#f7e3a8}img{max-width:100%}
pre{font-size:12px;max-height:400px;overflow:auto}"""


def render_html(run_dir: Path, results: dict[str, Any], notes: dict[str, Any], history: Sequence[Op],
                origin_ns: int) -> str:
    verdict = results.get("verdict", "unknown")
    counts = results.get("counts", {})
    error = results.get("harness_error")
    return "".join([
        f"<!doctype html><html><head><meta charset='utf-8'><title>jepsen-lite {_e(run_dir.name)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>jepsen-lite run {_e(run_dir.name)}: <span class='{_e(verdict)}'>{_e(verdict)}</span></h1>",
        f"<p>options: <code>{_e(results.get('options') or notes.get('options'))}</code></p>",
        f"<h2>Errors</h2><pre>{_e(error)}</pre>" if error else "",
        "<h2>Verdicts</h2>", _verdicts_html(results), _explanation_html(results),
        "<h2>Counts</h2>", _table(list(counts), [list(counts.values())]),
        "<h2>Recovery after heal</h2>", f"<p><code>{_e(results.get('recovery'))}</code></p>",
        _elections_html(results),
        "<h2>Availability and latency per phase</h2>", _stats_html(results.get("stats", {})),
        "<h2>Latency</h2><a href='latency.png'><img src='latency.png' alt='latency over time'></a>",
        "<h2>Timeline</h2><a href='timeline.png'><img src='timeline.png' alt='operations per client over time'></a>",
        _schedule_html(notes, history, origin_ns),
        "</body></html>\n",
    ])


def write_report(run_dir: Path) -> list[Path]:
    """Writes the three report files into `run_dir` (which must hold history.jsonl, run.json and
    results.json) and returns their paths."""
    history = load_history(run_dir / "history.jsonl")
    notes = json.loads((run_dir / "run.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    origin_ns = min((op.time_ns for op in history), default=0)
    ops, spans = timed_ops(history, origin_ns), fault_spans(history, origin_ns)
    heals = _heal_times(history, origin_ns)
    concurrency = int((notes.get("options") or {}).get("concurrency") or 1)
    plot_latency(ops, spans, heals, run_dir / "latency.png")
    plot_timeline(ops, spans, heals, concurrency, run_dir / "timeline.png")
    (run_dir / "report.html").write_text(render_html(run_dir, results, notes, history, origin_ns), encoding="utf-8")
    return [run_dir / name for name in REPORT_FILES]
