"""The history format and the pairing of invocations with completions."""

import math
from pathlib import Path

import pytest

from jepsen_lite.history import Op, dump_history, load_history, nemesis_ops, pair_ops


def record(
    index: int,
    process: int | str,
    type: str,
    time_ns: int,
    f: str = "write",
    value: object = None,
    error: str | None = None,
) -> Op:
    return Op(process, "n1", f, "k", value, type, time_ns, index, error)  # type: ignore[arg-type]


HISTORY = [
    record(0, 0, "invoke", 10, value=1),
    record(1, "nemesis", "invoke", 11, f="kill-start"),
    record(2, 1, "invoke", 12, f="read"),
    record(3, 0, "ok", 20, value=1),
    record(4, 1, "fail", 21, f="read", error="not leader"),
    record(5, 2, "invoke", 30, value=2),
    record(6, 3, "invoke", 31, value=3),
    record(7, 3, "info", 40, error="timeout"),
]


def test_dump_then_load_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    dump_history(HISTORY, path)
    assert load_history(path) == HISTORY


def test_pair_ops_pairs_per_process_and_skips_nemesis() -> None:
    paired = pair_ops(HISTORY)
    assert [(op.id, op.outcome, op.call_ns, op.return_ns, op.error) for op in paired] == [
        (0, "ok", 10, 20, None),
        (2, "fail", 12, 21, "not leader"),
        (5, "info", 30, math.inf, None),
        (6, "info", 31, math.inf, "timeout"),
    ]
    assert paired[0].to_dict()["return_ns"] == 20
    assert paired[2].to_dict()["return_ns"] is None


def test_nemesis_ops_are_kept_apart() -> None:
    assert [op.index for op in nemesis_ops(HISTORY)] == [1]


def test_second_invoke_on_busy_process_is_rejected() -> None:
    with pytest.raises(ValueError, match="invoked again"):
        pair_ops([record(0, 0, "invoke", 1), record(1, 0, "invoke", 2)])


def test_orphan_completion_is_rejected() -> None:
    with pytest.raises(ValueError, match="no invocation"):
        pair_ops([record(0, 0, "ok", 1)])


def test_load_rejects_unknown_type(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"process": 0, "node": "n1", "f": "read", "key": "k", "value": null, '
        '"type": "done", "time_ns": 1, "index": 0}\n'
    )
    with pytest.raises(ValueError, match="unknown type"):
        load_history(path)
