"""The collections checker: per-name linearizability against (exists, ids) plus a final read."""

from typing import Any

from jepsen_lite.collections_checker import check_collections
from jepsen_lite.history import Operation, Outcome
from jepsen_lite.linearizability import CheckResult
from jepsen_lite.tests._builders import ids, operation

BUDGET_S = 10.0


def op(
    id: int,
    f: str,
    name: str,
    call_ns: int,
    return_ns: int | None,
    output: Any = None,
    outcome: Outcome = "ok",
    record: Any = None,
) -> Operation:
    return operation(id, f, record, output, outcome, call_ns, return_ns, key=name)


def run(history: list[Operation], final_state: dict[str, set[str]]) -> CheckResult:
    return check_collections(history, final_state, BUDGET_S)


def test_create_add_and_matching_final_state_is_valid() -> None:
    history = [
        op(0, "create", "c", 0, 10),
        op(1, "add", "c", 20, 30, record="r1"),
        op(2, "add", "c", 25, 35, record="r2"),
    ]
    result = run(history, {"c": {"r1", "r2"}})
    assert (result.verdict, result.keys_total) == ("valid", 1)


def test_acknowledged_add_missing_from_final_state_is_invalid() -> None:
    history = [op(0, "create", "c", 0, 10), op(1, "add", "c", 20, 30, record="r1")]
    result = run(history, {"c": set()})
    assert result.verdict == "invalid"
    assert result.explanation is not None
    assert result.explanation.key == "c"
    assert ids(result.explanation.prefix) == [0, 1]
    assert ids(result.explanation.stuck) == [-1]
    assert result.explanation.to_dict()["stuck"][0]["output"] == [True, []]


def test_concurrent_creates_one_sees_exists_is_valid() -> None:
    history = [op(0, "create", "c", 0, 10), op(1, "create", "c", 0, 10, output="exists")]
    assert run(history, {"c": set()}).verdict == "valid"


def test_two_creates_both_succeeding_is_invalid() -> None:
    history = [op(0, "create", "c", 0, 10), op(1, "create", "c", 0, 10)]
    assert run(history, {"c": set()}).verdict == "invalid"


def test_add_to_missing_collection_reports_missing() -> None:
    history = [
        op(0, "add", "c", 0, 10, output="missing", record="r1"),
        op(1, "create", "c", 20, 30),
        op(2, "delete", "c", 40, 50),
        op(3, "delete", "c", 60, 70, output="missing"),
    ]
    assert run(history, {}).verdict == "valid"


def test_add_claiming_missing_after_create_is_invalid() -> None:
    history = [op(0, "create", "c", 0, 10), op(1, "add", "c", 20, 30, "missing", record="r1")]
    assert run(history, {"c": set()}).verdict == "invalid"


def test_deleted_collection_present_at_the_end_is_invalid() -> None:
    history = [op(0, "create", "c", 0, 10), op(1, "delete", "c", 20, 30)]
    assert run(history, {"c": set()}).verdict == "invalid"


def test_recreate_after_delete_starts_empty() -> None:
    history = [
        op(0, "create", "c", 0, 10),
        op(1, "add", "c", 20, 30, record="r1"),
        op(2, "delete", "c", 40, 50),
        op(3, "create", "c", 60, 70),
    ]
    assert run(history, {"c": set()}).verdict == "valid"
    assert run(history, {"c": {"r1"}}).verdict == "invalid"


def test_info_create_and_add_may_or_may_not_have_happened() -> None:
    history = [
        op(0, "create", "c", 0, None, outcome="info"),
        op(1, "add", "c", 20, None, outcome="info", record="r1"),
    ]
    assert run(history, {"c": {"r1"}}).verdict == "valid"
    assert run(history, {"c": set()}).verdict == "valid"
    assert run(history, {}).verdict == "valid"


def test_failed_create_did_not_happen() -> None:
    history = [op(0, "create", "c", 0, 10, outcome="fail")]
    assert run(history, {}).verdict == "valid"
    assert run(history, {"c": set()}).verdict == "invalid"


def test_collection_never_created_is_invalid() -> None:
    result = run([op(0, "create", "c", 0, 10)], {"c": set(), "ghost": set()})
    assert result.verdict == "invalid"
    assert result.explanation is not None
    assert result.explanation.key == "ghost"


def test_batch_add_adds_every_id() -> None:
    history = [op(0, "create", "c", 0, 10), op(1, "add", "c", 20, 30, record=["r1", "r2"])]
    assert run(history, {"c": {"r1", "r2"}}).verdict == "valid"


def test_many_info_adds_partly_present_is_decided_quickly() -> None:
    adds = [op(1 + i, "add", "c", 20, None, outcome="info", record=f"r{i}") for i in range(40)]
    history = [op(0, "create", "c", 0, 10), *adds]
    result = check_collections(history, {"c": {f"r{i}" for i in range(0, 40, 2)}}, 1.0)
    assert result.verdict == "valid"


def test_info_add_seen_but_collection_gone_is_invalid() -> None:
    history = [
        op(0, "create", "c", 0, 10),
        op(1, "add", "c", 20, None, outcome="info", record="r1"),
        op(2, "delete", "c", 20, 30),
    ]
    assert run(history, {"c": {"r1"}}).verdict == "invalid"
