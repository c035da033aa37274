"""The benchmark's answer: one row per piece of work, raftchroma next to `chroma run`, the ratio,
and the issue's targets marked PASS or MISS; printed as one table, written as JSON and drawn as a PNG.

Owns: turning measurements into rows, the targets, the table, the files in the results dir.
Must not: measure anything (it only reads what the run measured).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from bench.measure import Sample
from bench.options import REPO_ROOT


@dataclasses.dataclass(frozen=True)
class Target:
    text: str        # as printed, e.g. ">= 0.9x physical bound"
    at_least: float | None = None
    below: float | None = None

    def verdict(self, measured: float | None) -> str | None:
        if measured is None or math.isnan(measured):
            return "MISS"
        ok = measured >= self.at_least if self.at_least is not None else measured < self.below
        return "PASS" if ok else "MISS"


# The targets of issue 12 ("Performance").
TARGETS = {
    "ingest_leader": Target(">= 0.9x physical bound", at_least=0.9),
    "ingest_follower": Target(">= 0.9x physical bound", at_least=0.9),
    "upserts": Target(">= 3x chroma run", at_least=3.0),
    "query_stale": Target(">= 0.9x chroma run", at_least=0.9),
    "query_linearizable": Target(">= 0.8x chroma run", at_least=0.8),
    "leader_kill": Target("p99 < 1.5 s", below=1.5),
    "elections": Target("0 (no fault)", below=1),
}


@dataclasses.dataclass
class Row:
    key: str
    work: str
    unit: str
    chroma_run: float | None
    raftchroma: float | None
    ratio: float | None = None                # raftchroma / chroma run
    chroma_run_p50_ms: float | None = None
    chroma_run_p99_ms: float | None = None
    raftchroma_p50_ms: float | None = None
    raftchroma_p99_ms: float | None = None
    target: str | None = None
    target_measured: float | None = None      # the number the target is about
    verdict: str | None = None
    note: str = ""

    def judge(self, measured: float | None) -> "Row":
        target = TARGETS.get(self.key)
        if target is not None:
            self.target, self.target_measured, self.verdict = target.text, _round(measured, 3), target.verdict(measured)
        return self


def _round(x: float | None, digits: int = 1) -> float | None:
    return None if x is None or math.isnan(x) else round(x, digits)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def compared(key: str, work: str, unit: str, chroma: Sample | None, raft: Sample, per_record: bool,
             note: str = "") -> Row:
    """A row of one workload measured on both (or, with `chroma` None, on raftchroma only)."""
    rate = (lambda s: s.records_per_s) if per_record else (lambda s: s.ops_per_s)
    c = _round(rate(chroma)) if chroma else None
    r = _round(rate(raft))
    return Row(key, work, unit, c, r, _ratio(r, c),
               chroma.percentile_ms(50) if chroma else None, chroma.percentile_ms(99) if chroma else None,
               raft.percentile_ms(50), raft.percentile_ms(99), note=note)


def build_rows(m: dict[str, Any], batch_size: int, clients: int, read_clients: int) -> list[Row]:
    bound = m["bound"]["all_three_vec_per_s"]
    chroma_ingest = m["ingest"]["chroma_run"]
    rows = []
    for k, via in enumerate(("leader", "follower")):
        row = compared(f"ingest_{via}", f"batched ingest ({batch_size}/batch) via the {via}", "vec/s",
                       chroma_ingest[k], m["ingest"][via], per_record=True,
                       note=f"{m['ingest'][via].records} records each; the target compares with the bound")
        rows.append(row.judge(_ratio(row.raftchroma, bound)))
    rows.append(Row("physical_bound", "physical bound: 3 embedded stores at once", "vec/s", None, bound,
                    note="each store " + " / ".join(f"{v:g}" for v in bound_list(m)) + " vec/s; no server, no Raft"))
    rows.append(upserts_row(m["upserts"], clients))
    for kind in ("query", "get", "count"):
        for consistency in ("stale", "linearizable"):
            reads = m["reads"][kind]
            work = f"{read_clients}-client {READ_NAMES[kind]}, {consistency}"
            pair = {"chroma_run": reads["chroma_run"], "raftchroma": reads[consistency]}
            row = compared(f"{kind}_{consistency}", work, "ops/s", pair["chroma_run"], pair["raftchroma"],
                           per_record=False, note=_errors(pair))
            rows.append(row.judge(row.ratio))
    rows += [recall_row(m["recall"]), kill_row(m["kills"]), catch_up_row(m["catch_up"]), elections_row(m["terms"])]
    return rows


def upserts_row(up: dict[str, Sample], clients: int) -> Row:
    row = compared("upserts", f"{clients}-client single-record upserts", "ops/s", up["chroma_run"], up["raftchroma"],
                   per_record=False, note=_errors(up))
    return row.judge(row.ratio)


def only_rows(m: dict[str, Any], clients: int) -> list[Row]:
    """The rows of a `--only upserts` run: that workload and the elections during it."""
    return [upserts_row(m["upserts"], clients), elections_row(m["terms"])]


READ_NAMES = {"query": "query n_results=10", "get": "get by id", "count": "count"}


def recall_row(r: dict[str, Any]) -> Row:
    recalls = r["recall_at_10"]
    nodes = {k: v for k, v in recalls.items() if k != "chroma_run"}
    mean = round(float(np.mean(list(nodes.values()))), 3)
    agreement = next(v for k, v in r.items() if k.startswith("agreement_with_"))
    first = next(k for k in r if k.startswith("agreement_with_")).removeprefix("agreement_with_")
    note = (f"{r['queries']} queries; per node " + ", ".join(f"{k} {v}" for k, v in nodes.items()) +
            f"; top-10 agreement with {first}: " + ", ".join(f"{k} {v}" for k, v in agreement.items()))
    return Row("recall", "query recall@10 vs brute force (mean of the nodes)", "fraction", recalls["chroma_run"],
               mean, _ratio(mean, recalls["chroma_run"]), note=note)


def bound_list(m: dict[str, Any]) -> list[float]:
    return m["bound"]["per_store_vec_per_s"]


def _errors(pair: dict[str, Sample]) -> str:
    return "; ".join(f"{name} errors {s.errors}" for name, s in pair.items() if s.errors)


def kill_row(kills: list[dict[str, Any]]) -> Row:
    first_ack_s = [k["first_ack_s"] for k in kills]
    p50, p99 = (float(np.percentile(first_ack_s, q)) for q in (50, 99))
    row = Row("leader_kill", f"leader SIGKILL -> first ack via a survivor ({len(kills)} kills)", "s (p50)", None,
              _round(p50, 2), raftchroma_p50_ms=_round(p50 * 1000), raftchroma_p99_ms=_round(p99 * 1000),
              note=f"max {max(first_ack_s):.2f} s")
    return row.judge(p99)


def catch_up_row(c: dict[str, Any]) -> Row:
    return Row("catch_up", f"catch-up of a follower down for {c['records']} records", "s", None, c["catch_up_s"],
               note=f"first status after {c['first_status_s']} s; "
                    f"snapshot installs {c['snapshot_installs_since_start']}")


def elections_row(phases: list[dict[str, Any]]) -> Row:
    fault_free = [p for p in phases if not p["fault"]]
    unknown = [p["workload"] for p in fault_free if p["elections"] is None]
    elected = [f"{p['workload']} +{p['elections']}" for p in fault_free if p["elections"]]
    count = sum(p["elections"] or 0 for p in fault_free)
    note = ", ".join(elected) or f"terms {fault_free[0]['term_before']} -> {fault_free[-1]['term_after']}"
    if unknown:
        note += "; term unknown (a node did not answer) after: " + ", ".join(unknown)
    note += "".join(f"; with a fault, {p['workload']}: term {p['term_before']} -> {p['term_after']}"
                    for p in phases if p["fault"])
    row = Row("elections", f"term increments during the {len(fault_free)} fault-free workloads", "count", None,
              float(count), note=note)
    return row.judge(float("nan") if unknown else float(count))


# ------------------------------------------------------------------------- table


COLUMNS = ("work", "unit", "chroma run", "raftchroma", "ratio", "chroma run p50/p99 ms", "raftchroma p50/p99 ms",
           "target (measured)", "verdict")


def _num(x: float | None, whole: bool = False) -> str:
    if x is None:
        return ""
    if whole:
        return f"{x:,.0f}"
    return f"{x:,.2f}" if abs(x) < 10 else f"{x:,.1f}"


def _pair(a: float | None, b: float | None) -> str:
    return "" if a is None else f"{_num(a)} / {_num(b)}"


def format_table(rows: list[Row]) -> str:
    lines = [COLUMNS]
    for r in rows:
        whole = r.unit == "count"
        target = "" if r.target is None else f"{r.target} ({_num(r.target_measured, whole) or 'n/a'})"
        lines.append((r.work, r.unit, _num(r.chroma_run), _num(r.raftchroma, whole), _num(r.ratio),
                      _pair(r.chroma_run_p50_ms, r.chroma_run_p99_ms), _pair(r.raftchroma_p50_ms, r.raftchroma_p99_ms),
                      target, r.verdict or ""))
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    out = []
    for n, line in enumerate(lines):
        out.append("| " + " | ".join(cell.ljust(w) if i in (0, 1, 7, 8) else cell.rjust(w)
                                     for i, (cell, w) in enumerate(zip(line, widths))) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


# ----------------------------------------------------------------- JSON and chart


def machine(load_before: list[float]) -> dict[str, Any]:
    import chromadb
    return {"cores": os.cpu_count(), "python": platform.python_version(), "chromadb": chromadb.__version__,
            "platform": platform.platform(), "load_average_1_5_15_before": load_before,
            "load_average_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
            "git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(_git("status", "--porcelain")),
            "note": "the client, chroma run, the 3 nodes and the 3 bound stores all share this machine"}


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def write_results(report: dict[str, Any], results_dir: Path, prefix: str = "") -> Path:
    """bench/results/<prefix><stamp>.json, and latest.json for a full run (no prefix); each written
    whole, then renamed."""
    results_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    path = results_dir / f"{prefix}{report['started_utc']}.json"
    for target in (path,) + (() if prefix else (results_dir / "latest.json",)):
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    return path


def draw_chart(report: dict[str, Any], path: Path) -> Path | None:
    """Ratios against their targets, and the leader-kill times; None when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in report["rows"] if r["ratio"] is not None or r["key"].startswith("ingest")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    _draw_ratios(left, rows)
    _draw_kills(right, report["details"]["kills"])
    m = report["machine"]
    fig.suptitle(f"raftchroma vs chroma run, {report['started_utc']}, {m['cores']} cores, commit "
                 f"{(m['git_commit'] or '?')[:10]}, load {m['load_average_1_5_15_before'][0]} before", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _draw_ratios(ax: Any, rows: list[dict[str, Any]]) -> None:
    labels, values, colors = [], [], []
    for r in rows:
        vs_bound = r["key"].startswith("ingest")
        labels.append(r["work"] + ("\n(vs physical bound)" if vs_bound else ""))
        values.append((r["target_measured"] if vs_bound else r["ratio"]) or 0.0)
        colors.append({"PASS": "tab:green", "MISS": "tab:red"}.get(r["verdict"], "tab:gray"))
    y = range(len(rows))
    bars = ax.barh(y, values, color=colors)
    ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    for i, r in enumerate(rows):
        target = TARGETS.get(r["key"])
        if target is not None and target.at_least is not None:
            ax.plot([target.at_least] * 2, [i - 0.4, i + 0.4], color="black", linewidth=2)
    ax.axvline(1.0, color="gray", linestyle=":", linewidth=1)
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("raftchroma / chroma run (black tick: target)")


def _draw_kills(ax: Any, kills: list[dict[str, Any]]) -> None:
    numbers = list(range(1, len(kills) + 1))
    bars = ax.bar(numbers, [k["first_ack_s"] for k in kills], color="tab:blue")
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(numbers)
    ax.axhline(TARGETS["leader_kill"].below, color="black", linestyle="--", linewidth=1, label="target p99 < 1.5 s")
    ax.set_xlabel("leader kill")
    ax.set_ylabel("s from SIGKILL to the first acknowledged write")
    ax.legend(fontsize=8)
