"""End-to-end jepsen-lite runs against real 3-node clusters, one per nemesis (partition through
raftchroma's test-only fault-injecting transport, disk-full and apply-fail through its test-only
disk faults), the proof that the checker fails when raftchroma serves linearizable reads without
the barrier, a short hostile run, and short batch runs.

Each run is a `python -m jepsen_lite run` subprocess with a deadline; whatever happens, the runner
is stopped and every node it recorded in pids.json is killed (by process group) before the test ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jepsen_lite.nemesis import schedule

JEPSEN_LITE_DIR = Path(__file__).resolve().parents[2]
RUN_DEADLINE_S = 55.0
# A wedged cluster runs every post-heal wait to its end: recovery 60 s, probes 15 s, final
# reads 30 s, digests 30 s. A healthy one needs about 35 s for the hostile run below.
HOSTILE_DEADLINE_S = 300.0
RUN_FILES = ("history.jsonl", "results.json", "run.json", "logs/n1.log", "logs/n2.log", "logs/n3.log",
             "report.html", "latency.png", "timeline.png")


def _kill_recorded_nodes(store: Path) -> None:
    """Last resort: SIGCONT + SIGKILL the process group of every node a run recorded, if it is
    still a raftchroma node (a pid may have been reused)."""
    for pid_file in store.glob("*/pids.json"):
        for pids in json.loads(pid_file.read_text()).values():
            for pid in pids:
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"raftchroma" in cmdline:
                    for sig in (signal.SIGCONT, signal.SIGKILL):
                        try:
                            os.killpg(pid, sig)
                        except ProcessLookupError:
                            pass


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "store"
    path.mkdir()
    try:
        yield path
    finally:
        _kill_recorded_nodes(path)


def run_jepsen_lite(store: Path, *args: str, deadline_s: float = RUN_DEADLINE_S) -> tuple[int, Path, str]:
    """Runs the CLI; returns (exit code, run directory, output). Stops the runner at the deadline."""
    env = dict(os.environ, PYTHONPATH=str(JEPSEN_LITE_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "jepsen_lite", "run", "--store", str(store), *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the runner kills its nodes on SIGTERM
        try:
            out, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        pytest.fail(f"jepsen-lite did not finish within {deadline_s}s:\n{out.decode(errors='replace')}")
    run_dirs = sorted(p for p in store.iterdir() if p.is_dir())
    assert len(run_dirs) == 1, f"expected one run directory, got {run_dirs}\n{out.decode(errors='replace')}"
    return proc.returncode, run_dirs[0], out.decode(errors="replace")


def _describe(run_dir: Path, out: str) -> str:
    results = run_dir / "results.json"
    text = results.read_text() if results.exists() else "(no results.json)"
    return f"{out}\n{text[:4000]}"


COMMON = ("--time-limit", "12", "--concurrency", "4", "--rate", "30", "--nodes", "3")


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize(("workload", "nemesis", "seed"), [
    ("set", "kill", "1"),
    ("register", "pause", "2"),
    ("set", "restart", "3"),
])
def test_short_run_with_each_nemesis_is_valid(store: Path, workload: str, nemesis: str, seed: str) -> None:
    code, run_dir, out = run_jepsen_lite(store, "--workload", workload, "--nemesis", nemesis, "--seed", seed, *COMMON)
    for name in RUN_FILES:
        assert (run_dir / name).exists(), f"{name} missing from {run_dir}"
    results = json.loads((run_dir / "results.json").read_text())
    assert code == 0, _describe(run_dir, out)
    assert results["verdict"] == "valid"
    assert results["counts"]["ok"] > 0
    assert results["counts"]["nemesis_records"] > 0, "the nemesis did nothing"
    assert any(f.startswith(f"{nemesis}-start") for f in _nemesis_fs(run_dir))


def _nemesis_records(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line]
    return [r for r in records if r["process"] == "nemesis"]


def _nemesis_fs(run_dir: Path) -> list[str]:
    return [r["f"] for r in _nemesis_records(run_dir)]


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_short_partition_run_is_valid_and_records_each_cut(store: Path) -> None:
    """Seed 5 isolates the leader for ~4.7 s, then splits the nodes 1|2 for ~2 s; every
    partition is applied to all three nodes, lifted, and healed."""
    code, run_dir, out = run_jepsen_lite(store, "--workload", "register", "--nemesis", "partition",
                                         "--seed", "5", *COMMON)
    for name in RUN_FILES:
        assert (run_dir / name).exists(), f"{name} missing from {run_dir}"
    results = json.loads((run_dir / "results.json").read_text())
    assert code == 0, _describe(run_dir, out)
    assert results["verdict"] == "valid" and results["counts"]["ok"] > 0
    starts = [r for r in _nemesis_records(run_dir) if r["f"] == "partition-start" and r["type"] == "ok"]
    assert [r["value"]["mode"] for r in starts] == ["leader", "halves"]
    for record in starts:
        blocked = record["value"]["blocked"]
        assert sorted(blocked) == ["n1", "n2", "n3"] and any(blocked.values())
        assert record["value"]["unreached"] == []
    leader = starts[0]["value"]["leader"]
    assert leader is None or starts[0]["value"]["blocked"][leader] == sorted({"n1", "n2", "n3"} - {leader})
    stops = [r for r in _nemesis_records(run_dir) if r["f"] == "partition-stop" and r["type"] == "ok"]
    assert len(stops) == 2 and all(not any(r["value"]["blocked"].values()) for r in stops)
    assert "heal" in _nemesis_fs(run_dir)
    assert "partition" in (run_dir / "report.html").read_text()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_unsafe_local_reads_are_caught(store: Path) -> None:
    """raftchroma's test-only --unsafe-local-reads serves linearizable reads without the read
    barrier; a node cut off from the majority (or just resumed from a pause) serves its old state
    while the others move on: a stale read. Raft runs in its own process now, so a paused node
    catches up within milliseconds of resuming and pauses alone rarely show it on a loaded
    machine; partitions (seeded) leave a minority node serving stale reads for seconds. Up to
    three seeds; the checker must catch it in at least one."""
    attempts = []
    for seed in ("4", "5", "6"):
        attempt_store = store / f"seed-{seed}"
        attempt_store.mkdir()
        code, run_dir, out = run_jepsen_lite(
            attempt_store, "--workload", "register", "--nemesis", "partition,pause", "--seed", seed,
            "--unsafe-local-reads", "--time-limit", "14", "--concurrency", "9", "--rate", "120", "--nodes", "3")
        results = json.loads((run_dir / "results.json").read_text())
        attempts.append((seed, code, results["verdicts"]))
        if code == 1:
            assert results["verdicts"]["workload"] == "invalid", _describe(run_dir, out)
            assert results["checkers"]["workload"]["explanation"]["stuck"], "an invalid verdict must explain itself"
            return
    raise AssertionError(f"stale reads were never caught: {attempts}")


@pytest.mark.slow
@pytest.mark.timeout(HOSTILE_DEADLINE_S + 60)
def test_short_hostile_run_with_kills_keeps_the_cluster_available(store: Path) -> None:
    """Duplicate creates with names made of error texts, records with extreme values, invalid
    bodies, between normal adds, while nodes are killed: every hostile request is followed by an
    acknowledged write, no acknowledged add is lost, every node converges. (Before the pure state
    machine, this run wedged the cluster: a duplicate tenant named after a disk error.)"""
    code, run_dir, out = run_jepsen_lite(store, "--workload", "hostile", "--nemesis", "kill", "--seed", "3",
                                         "--time-limit", "10", "--concurrency", "4", "--rate", "20", "--nodes", "3",
                                         deadline_s=HOSTILE_DEADLINE_S)
    for name in RUN_FILES:
        assert (run_dir / name).exists(), f"{name} missing from {run_dir}"
    results = json.loads((run_dir / "results.json").read_text())
    hostile = results["checkers"]["workload"]
    assert hostile["availability"]["hostile_ops"] > 0 and hostile["replies"]["by_f"].get("h-create-tenant")
    assert any(f.startswith("kill-start") for f in _nemesis_fs(run_dir))
    assert code == 0, _describe(run_dir, out)
    assert results["verdict"] == "valid"
    assert hostile["availability"]["final_probes"]["ok"] > 0


BATCH_DEADLINE_S = 150.0  # final digests of a few thousand records take seconds per node (see runner.py)


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.slow
@pytest.mark.timeout(BATCH_DEADLINE_S + 30)
def test_short_batch_run_without_faults_is_valid_with_no_election(store: Path) -> None:
    """Whole batches of 50-500 records added, upserted, deleted and refused by four clients on
    three nodes, read stale and linearizably: every read shows whole batches, and with no fault
    the status monitor sees no election at all."""
    code, run_dir, out = run_jepsen_lite(store, "--workload", "batch", "--nemesis", "", "--seed", "1", *COMMON,
                                         deadline_s=BATCH_DEADLINE_S)
    for name in (*RUN_FILES, "raft-status.jsonl"):
        assert (run_dir / name).exists(), f"{name} missing from {run_dir}"
    results = _results(run_dir)
    assert code == 0, _describe(run_dir, out)
    batch = results["checkers"]["workload"]
    assert batch["final_reads"] == ["n1", "n2", "n3"] and batch["writes"]["add-batch"]["ok"] > 0
    assert batch["writes"]["refused-batch"]["fail"] > 0, "some batches must be refused"
    assert {"read-batch stale", "read-batch linearizable"} <= set(batch["reads_checked"])
    assert results["elections"]["elections"] == 0 and results["elections"]["samples"] > 0
    assert results["verdicts"]["elections"] == "valid"


@pytest.mark.slow
@pytest.mark.timeout(BATCH_DEADLINE_S + 30)
def test_short_batch_run_with_full_disks_is_valid(store: Path) -> None:
    """Seed 6: the leader's disk full for ~2 s, then a majority's for ~4 s (no commit possible):
    reads still show whole batches, the nodes converge, no election outside the faults."""
    code, run_dir, out = run_jepsen_lite(store, "--workload", "batch", "--nemesis", "disk-full", "--seed", "6",
                                         *COMMON, deadline_s=BATCH_DEADLINE_S)
    results = _results(run_dir)
    assert code == 0, _describe(run_dir, out)
    starts = [r for r in _nemesis_records(run_dir) if r["f"] == "disk-full-start" and r["type"] == "ok"]
    assert [r["value"]["mode"] for r in starts] == ["leader", "majority"]
    assert all(r["value"]["faults"] == {"disk_full": True, "apply_fails": False} for r in starts)
    stops = [r for r in _nemesis_records(run_dir) if r["f"] == "disk-full-stop" and r["type"] == "ok"]
    assert len(stops) == 2 and all(r["value"]["unreached"] == [] for r in stops)
    assert results["elections"]["elections_outside_windows"] == 0


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_short_set_run_with_failing_applies_is_valid(store: Path) -> None:
    """Seed 3: the leader's store changes fail (EIO) twice for ~3.5 s; it retries, catches up
    after each heal, and no acknowledged add is lost."""
    code, run_dir, out = run_jepsen_lite(store, "--workload", "set", "--nemesis", "apply-fail", "--seed", "3", *COMMON)
    results = _results(run_dir)
    assert code == 0, _describe(run_dir, out)
    assert results["checkers"]["workload"]["lost"] == [] and results["counts"]["ok"] > 0
    assert [r["value"]["mode"] for r in _nemesis_records(run_dir)
            if r["f"] == "apply-fail-start" and r["type"] == "ok"] == ["leader", "leader"]
    assert results["elections"]["elections_outside_windows"] == 0


def test_same_seed_same_schedule() -> None:
    nodes = ["n1", "n2", "n3"]
    kinds = ["kill", "pause", "restart", "partition"]
    first = schedule(42, kinds, 60.0, nodes)
    assert first == schedule(42, kinds, 60.0, nodes)
    assert first != schedule(43, kinds, 60.0, nodes)
    assert {f.kind for f in first} == set(kinds)
    assert all(0 < f.start_s < f.end_s <= 60.0 for f in first)
    assert all(a.end_s < b.start_s for a, b in zip(first, first[1:])), "faults must not overlap"


def test_schedule_order_of_kinds_does_not_matter() -> None:
    assert schedule(7, ["pause", "kill"], 30.0, ["n2", "n1", "n3"]) == schedule(7, ["kill", "pause"], 30.0, ["n1", "n2", "n3"])


def test_unknown_nemesis_is_refused_before_anything_starts(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(JEPSEN_LITE_DIR))
    proc = subprocess.run([sys.executable, "-m", "jepsen_lite", "run", "--workload", "set", "--nemesis",
                           "kill,flood", "--store", str(tmp_path)], env=env, capture_output=True, timeout=30)
    assert proc.returncode == 2
    assert b"unknown nemesis 'flood'" in proc.stderr and b"partition" in proc.stderr
    assert not list(tmp_path.iterdir()), "no run may start"


def _completed(records: list[dict], f: str) -> list[str]:
    return [r["node"] for r in records if r["f"] == f and r["type"] == "ok"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_membership_run_adds_promotes_and_removes_and_is_valid(store: Path) -> None:
    """Seed 25: add n4 (join, add, catch up, promote) from ~1.8 s, then from ~12.4 s make n3 the
    leader and remove it (leadership handed over again first). The run must be valid, the
    history must show the add, the promotion, both transfers and the removal done (not
    skipped), and the checkers must use the final membership: n1, n2, n4."""
    assert [(f.mode, f.targets) for f in schedule(25, ["membership"], 20.0, ["n1", "n2", "n3"])] == [
        ("add", ("n4",)), ("remove-leader", ("n3",))]
    code, run_dir, out = run_jepsen_lite(store, "--workload", "set", "--nemesis", "membership", "--seed", "25",
                                         "--time-limit", "20", "--concurrency", "4", "--rate", "30",
                                         deadline_s=220.0)
    results = json.loads((run_dir / "results.json").read_text())
    assert code == 0 and results["verdict"] == "valid", _describe(run_dir, out)
    records = _nemesis_records(run_dir)
    assert "n4" in _completed(records, "join-node") and "n4" in _completed(records, "add-member")
    assert "n4" in _completed(records, "promote-member"), _describe(run_dir, out)
    assert "n3" in _completed(records, "remove-member") and "n3" in _completed(records, "stop-node")
    transfers = [r["value"] for r in records if r["f"] == "transfer-leader" and r["type"] == "ok"]
    assert transfers[0]["to"] == "n3" and transfers[1]["from"] == "n3" and transfers[1]["to"] != "n3"
    assert not [r for r in records if r["f"] == "membership-stop" and r["value"].get("skipped")]
    settled = [r for r in records if r["f"] == "members" and r["type"] == "ok"][-1]["value"]
    assert settled["members"] == settled["voters"] == ["n1", "n2", "n4"]
    assert json.loads((run_dir / "run.json").read_text())["members"] == ["n1", "n2", "n4"]
    assert results["checkers"]["convergence"]["nodes"] == ["n1", "n2", "n4"]
    assert results["checkers"]["workload"]["nodes_read"] == ["n1", "n2", "n4"]
    assert results["checkers"]["workload"]["acknowledged"] > 0
    assert "n4" in results["checkers"]["elections"]["nodes_sampled"]  # the monitor followed the join
    assert (run_dir / "logs" / "n4.log").exists() and "n4" in json.loads((run_dir / "pids.json").read_text())
