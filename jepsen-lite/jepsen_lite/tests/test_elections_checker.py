"""The elections checker on hand-written and recorded status samples: an election (a new term, or
a node's leader_changes counter rising) in quiet time is invalid; inside a fault window, or
within the grace after it, or before a killed node has come back, it is excused (with negative
controls just past each bound)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jepsen_lite.elections_checker import GRACE_S, check_elections
from jepsen_lite.history import Op, load_history, nemesis_ops

S = 1_000_000_000
DATA = Path(__file__).parent / "data"


def sample(node: str, at_s: float, term: int = 1, leader_changes: int = 1, pid: int = 100,
           leader: str | None = "n1") -> dict[str, Any]:
    return {"node": node, "sent_ns": int(at_s * S) - 1000, "time_ns": int(at_s * S), "pid": pid, "term": term,
            "leader_changes": leader_changes, "role": "leader" if node == leader else "follower", "leader": leader}


def steady(until_s: float = 40.0, step_s: float = 0.5) -> list[dict[str, Any]]:
    """Three nodes polled every step_s from 0 s, term 1, n1 leading, nothing changing."""
    return [sample(n, i * step_s + k * 0.01) for i in range(int(until_s / step_s)) for k, n in enumerate(("n1", "n2", "n3"))]


def elect(samples: list[dict[str, Any]], from_s: float, term: int = 2, leader: str = "n2",
          nodes: tuple[str, ...] = ("n1", "n2", "n3")) -> list[dict[str, Any]]:
    """From `from_s` on, the nodes show a new term and leader (each counted one more change)."""
    out = []
    for s in samples:
        if s["time_ns"] >= from_s * S and s["node"] in nodes:
            s = {**s, "term": term, "leader": leader, "leader_changes": s["leader_changes"] + 1}
        out.append(s)
    return out


def fault(kind: str, start_s: float, end_s: float, targets: tuple[str, ...] = ("n2",), index: int = 0) -> list[Op]:
    value = {"targets": list(targets), "mode": "one"}
    node = ",".join(targets)
    return [Op("nemesis", node, f"{kind}-start", None, value, "invoke", int(start_s * S), index),  # type: ignore[arg-type]
            Op("nemesis", node, f"{kind}-start", None, value, "ok", int(start_s * S) + 1000, index + 1),  # type: ignore[arg-type]
            Op("nemesis", node, f"{kind}-stop", None, value, "invoke", int(end_s * S), index + 2),  # type: ignore[arg-type]
            Op("nemesis", node, f"{kind}-stop", None, value, "ok", int(end_s * S) + 1000, index + 3)]  # type: ignore[arg-type]


def test_no_change_is_valid_with_zero_elections() -> None:
    result = check_elections(steady(), [], origin_ns=0)
    assert result["verdict"] == "valid"
    assert (result["elections"], result["elections_outside_windows"], result["leader_changes"]) == (0, 0, 0)


def test_an_election_in_quiet_time_is_invalid_and_counted_once() -> None:
    result = check_elections(elect(steady(), 10.0), [], origin_ns=0)
    assert result["verdict"] == "invalid"
    assert result["elections_outside_windows"] == 1, "three nodes seeing one new term is one election"
    assert result["leader_changes_outside_windows"] == 3
    assert result["outside"][0]["between_s"][1] == 10.0


def test_a_term_jump_of_two_is_two_elections() -> None:
    assert check_elections(elect(steady(), 10.0, term=3), [], origin_ns=0)["elections_outside_windows"] == 2


def test_an_election_during_a_fault_is_excused() -> None:
    result = check_elections(elect(steady(), 10.0), fault("pause", 8.0, 11.0), origin_ns=0)
    assert result["verdict"] == "valid" and result["elections"] == 1


def test_the_grace_after_a_fault_excuses_an_election_and_no_more() -> None:
    just_inside = 11.0 + GRACE_S - 0.5
    assert check_elections(elect(steady(), just_inside), fault("partition", 8.0, 11.0), origin_ns=0)["verdict"] == "valid"
    just_after = 11.0 + GRACE_S + 1.0
    assert check_elections(elect(steady(), just_after), fault("partition", 8.0, 11.0), origin_ns=0)["verdict"] == "invalid"


def test_a_killed_node_is_excused_until_it_answers_again_plus_the_grace() -> None:
    """n2 is killed 8-11 s and answers again (a new pid) only at 16 s: an election it starts at
    20 s is within the grace of its return; the same timing after a pause is not excused."""
    samples = [s for s in steady() if not (s["node"] == "n2" and 8.0 <= s["time_ns"] / S < 16.0)]
    samples = [{**s, "pid": 200, "leader_changes": 1} if s["node"] == "n2" and s["time_ns"] >= 16 * S else s
               for s in samples]
    elected = elect(samples, 20.0)
    assert check_elections(elected, fault("kill", 8.0, 11.0), origin_ns=0)["verdict"] == "valid"
    assert check_elections(elected, fault("pause", 8.0, 11.0), origin_ns=0)["verdict"] == "invalid"


def test_a_restarted_node_does_not_count_its_counter_starting_over() -> None:
    """n3's counter was 3; its new process (another pid) starts again at 0 and learns the leader
    (1): no leader change. A rise inside the new process after that is one."""
    samples = [{**s, "leader_changes": 3} if s["node"] == "n3" else s for s in steady()]
    restarted = [{**s, "pid": 200, "leader_changes": 0 if s["time_ns"] < 20.6 * S else 1}
                 if s["node"] == "n3" and s["time_ns"] >= 20 * S else s for s in samples]
    assert check_elections(restarted, [], origin_ns=0)["verdict"] == "valid"
    rises = [{**s, "leader_changes": 2} if s["node"] == "n3" and s["time_ns"] >= 25 * S else s for s in restarted]
    assert check_elections(rises, [], origin_ns=0)["leader_changes_outside_windows"] == 1


def test_a_leader_change_without_a_new_term_still_counts() -> None:
    samples = [{**s, "leader_changes": 2} if s["node"] == "n3" and s["time_ns"] >= 12 * S else s for s in steady()]
    result = check_elections(samples, [], origin_ns=0)
    assert result["verdict"] == "invalid" and result["elections_outside_windows"] == 0
    assert result["leader_changes_outside_windows"] == 1


def test_the_startup_elections_are_the_baseline() -> None:
    """Until every node has answered once, terms differ as the first election settles: n1 first
    answers term 0 (no leader yet), n3 term 3; from then on all show term 3."""
    samples = [{**s, "term": 3} for s in steady()]
    samples[0] = {**samples[0], "term": 0, "leader": None, "leader_changes": 0}
    result = check_elections(samples, [], origin_ns=0)
    assert result["verdict"] == "valid" and result["elections"] == 0


def test_a_gap_in_sampling_that_meets_a_window_is_excused() -> None:
    """A node not sampled while paused: its new term may date from inside the pause."""
    samples = [s for s in steady() if not (s["node"] == "n3" and 8.0 <= s["time_ns"] / S < 30.0)]
    elected = elect(samples, 30.0, nodes=("n3",))
    assert check_elections(elected, fault("pause", 9.0, 10.0, ("n3",)), origin_ns=0)["verdict"] == "valid"


def test_no_samples_is_unknown() -> None:
    assert check_elections([], [])["verdict"] == "unknown"


# ------------------------------------------------------------ recorded run


def _recorded() -> tuple[list[dict[str, Any]], list[Op], int]:
    samples = [json.loads(line) for line in (DATA / "batch-disk-full-raft-status.jsonl").read_text().splitlines()]
    history = load_history(DATA / "batch-disk-full-history.jsonl")
    return samples, nemesis_ops(history), min(op.time_ns for op in history)


def test_the_recorded_disk_full_run_saw_no_election() -> None:
    samples, nemesis, origin_ns = _recorded()
    result = check_elections(samples, nemesis, origin_ns)
    assert result["verdict"] == "valid" and result["elections"] == 0 and result["samples"] == len(samples)
    assert [w[0] for w in result["excused_windows_s"]] == ["disk-full"] * 3


def test_the_recorded_run_with_an_election_before_the_first_fault_is_invalid() -> None:
    samples, nemesis, origin_ns = _recorded()
    at_ns = origin_ns + int(1.5 * S)  # the first fault starts at about 2.9 s
    bumped = [{**s, "term": 2} if s["node"] == "n3" and s["time_ns"] >= at_ns else s for s in samples]
    result = check_elections(bumped, nemesis, origin_ns)
    assert result["verdict"] == "invalid" and result["elections_outside_windows"] == 1
    assert result["outside"][0]["node"] == "n3"
