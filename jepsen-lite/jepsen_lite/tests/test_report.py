"""The report of a run, drawn from a small hand-made run directory: the three files appear, the
page carries the verdicts, the per-phase numbers, the fault schedule, an invalid result's
explanation and the elections seen outside fault windows."""

from __future__ import annotations

import json
from pathlib import Path

from jepsen_lite.history import Op, dump_history
from jepsen_lite.report import REPORT_FILES, fault_spans, timed_ops, write_report

MS = 1_000_000
CUT = {"mode": "leader", "blocked": {"n1": ["n2", "n3"], "n2": ["n1"], "n3": ["n1"]}}


def _history() -> list[Op]:
    rows = [
        (0, "n1", "write", "k0", 1, "invoke", 0), (0, "n1", "write", "k0", 1, "ok", 12),
        (1, "n2", "read", "k0", None, "invoke", 20), (1, "n2", "read", "k0", 1, "ok", 31),
        ("nemesis", "n1-n2,n1-n3", "partition-start", None, CUT, "invoke", 40),
        ("nemesis", "n1-n2,n1-n3", "partition-start", None, CUT, "ok", 41),
        (0, "n1", "write", "k0", 2, "invoke", 50), (0, "n1", "write", "k0", None, "info", 3050),
        (1, "n2", "read", "k0", None, "invoke", 60), (1, "n2", "read", "k0", None, "fail", 70),
        ("nemesis", "all", "partition-stop", None, {"blocked": {}}, "invoke", 3100),
        ("nemesis", "all", "partition-stop", None, {"blocked": {}}, "ok", 3101),
        (3, "n1", "read", "k0", None, "invoke", 3200), (3, "n1", "read", "k0", 1, "ok", 3210),
        ("nemesis", "all", "heal", None, None, "invoke", 3300), ("nemesis", "all", "heal", None, None, "ok", 3301),
    ]
    return [Op(p, n, f, k, v, t, at_ms * MS, i) for i, (p, n, f, k, v, t, at_ms) in enumerate(rows)]


def _run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "20260101T000000-7"
    run_dir.mkdir()
    dump_history(_history(), run_dir / "history.jsonl")
    schedule = [{"kind": "partition", "mode": "leader", "targets": ["n1", "n2", "n3"], "start_s": 0.04, "end_s": 3.1}]
    (run_dir / "run.json").write_text(json.dumps({"options": {"workload": "register", "concurrency": 3},
                                                  "nodes": ["n1", "n2", "n3"], "schedule": schedule}))
    stuck = [{"id": 12, "process": 3, "node": "n1", "f": "read", "key": "k0", "input": None, "output": 1,
              "outcome": "ok", "call_ns": 3200 * MS, "return_ns": 3210 * MS}]
    explanation = {"key": "k0", "prefix_length": 2, "prefix_ids": [0, 6], "prefix_tail": [],
                   "state_after_prefix": 2, "stuck": stuck}
    results = {"verdict": "invalid", "verdicts": {"workload": "invalid", "convergence": "valid"},
               "checkers": {"workload": {"verdict": "invalid", "explanation": explanation},
                            "convergence": {"verdict": "valid"}},
               "counts": {"operations": 5, "ok": 3, "fail": 1, "info": 1},
               "stats": {"quiet": {"count": 3, "ok": 3, "availability": 1.0, "latency_ms_p50": 11.0, "by_f": {}},
                         "fault": {"count": 2, "ok": 0, "availability": 0.0, "by_f": {}}, "fault_intervals": 1},
               "recovery": {"converged": True, "seconds": 0.5}, "options": {"workload": "register"}}
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def test_report_writes_the_three_files(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    paths = write_report(run_dir)
    assert [p.name for p in paths] == list(REPORT_FILES)
    for name in ("latency.png", "timeline.png"):
        data = (run_dir / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
    page = (run_dir / "report.html").read_text()
    assert "invalid" in page and "convergence" in page
    assert "availability" in page and "partition-start" in page and "n1-n2,n1-n3" in page
    assert "key k0" in page and "state after it" in page  # the explanation of the invalid key
    assert "src='latency.png'" in page and "src='timeline.png'" in page


def test_info_ops_keep_their_completion_time_and_faults_end_at_stop() -> None:
    history = _history()
    ops = timed_ops(history, origin_ns=0)
    info = [op for op in ops if op.outcome == "info"]
    assert [(op.f, op.call_s, op.return_s) for op in info] == [("write", 0.05, 3.05)]
    spans = fault_spans(history, origin_ns=0)
    assert [(s.kind, s.start_s, s.end_s) for s in spans] == [("partition", 0.04, 3.101)]


def test_report_shows_the_elections_outside_fault_windows(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    elections = {"verdict": "invalid", "elections": 2, "leader_changes": 3, "samples": 40, "grace_s": 6.0,
                 "elections_outside_windows": 1, "leader_changes_outside_windows": 1,
                 "outside": [{"kind": "new-term", "node": "n3", "term": 4, "between_s": [7.5, 8.0]}]}
    results["checkers"]["elections"] = elections
    results["verdicts"]["elections"] = "invalid"
    (run_dir / "results.json").write_text(json.dumps(results))
    write_report(run_dir)
    page = (run_dir / "report.html").read_text()
    assert "<h2>Elections</h2>" in page and "<b>1</b> new terms" in page and "[7.5, 8.0]" in page


def test_report_of_a_run_without_faults_or_ops(tmp_path: Path) -> None:
    run_dir = tmp_path / "empty"
    run_dir.mkdir()
    dump_history([], run_dir / "history.jsonl")
    (run_dir / "run.json").write_text(json.dumps({"options": {}, "nodes": []}))
    (run_dir / "results.json").write_text(json.dumps({"verdict": "unknown", "harness_error": "no leader <b>"}))
    write_report(run_dir)
    page = (run_dir / "report.html").read_text()
    assert "no leader &lt;b&gt;" in page
    assert all((run_dir / name).exists() for name in REPORT_FILES)
