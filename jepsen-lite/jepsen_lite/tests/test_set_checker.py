"""The set checker on hand-written histories; every report is asserted whole."""

from typing import Any

from jepsen_lite.history import Operation, Outcome
from jepsen_lite.set_checker import check_set
from jepsen_lite.tests._builders import operation


def add(id: int, element: Any, outcome: Outcome = "ok") -> Operation:
    return operation(id, "add", element, None, outcome, id, id + 1, key=None)


def final_read(id: int, node: str, elements: list[Any]) -> Operation:
    return operation(id, "final-read", None, elements, "ok", 100 + id, 101 + id, None, node)


def report(**overrides: Any) -> dict[str, Any]:
    expected: dict[str, Any] = {
        "verdict": "valid",
        "attempted": 3,
        "acknowledged": 3,
        "never_read": 0,
        "lost": [],
        "unexpected": [],
        "failed_but_present": [],
        "recovered": [],
        "nodes_read": ["n1", "n2", "n3"],
        "disagreement": {},
    }
    expected.update(overrides)
    return expected


def reads_of_all_nodes(start_id: int, elements: list[Any]) -> list[Operation]:
    return [final_read(start_id + i, node, elements) for i, node in enumerate(["n1", "n2", "n3"])]


def test_all_acknowledged_adds_present_is_valid() -> None:
    history = [add(0, 1), add(1, 2), add(2, 3), *reads_of_all_nodes(3, [1, 2, 3])]
    assert check_set(history) == report()


def test_lost_acknowledged_add_is_invalid() -> None:
    history = [add(0, 1), add(1, 2), add(2, 3), *reads_of_all_nodes(3, [1, 3])]
    assert check_set(history) == report(verdict="invalid", lost=[2], never_read=1)


def test_unexpected_element_is_invalid() -> None:
    history = [add(0, 1), add(1, 2), add(2, 3), *reads_of_all_nodes(3, [1, 2, 3, 99])]
    assert check_set(history) == report(verdict="invalid", unexpected=[99])


def test_info_add_that_is_present_is_recovered_and_valid() -> None:
    history = [add(0, 1), add(1, 2, "info"), add(2, 3, "info"), *reads_of_all_nodes(3, [1, 2])]
    assert check_set(history) == report(acknowledged=1, recovered=[2], never_read=1)


def test_failed_add_that_is_present_is_invalid() -> None:
    history = [add(0, 1), add(1, 2), add(2, 3, "fail"), *reads_of_all_nodes(3, [1, 2, 3])]
    assert check_set(history) == report(verdict="invalid", acknowledged=2, failed_but_present=[3])


def test_node_disagreement_is_invalid_and_names_the_node() -> None:
    history = [
        add(0, 1),
        add(1, 2),
        add(2, 3, "info"),
        final_read(3, "n1", [1, 2, 3]),
        final_read(4, "n2", [1, 2]),
        final_read(5, "n3", [1, 2, 3]),
    ]
    assert check_set(history) == report(
        verdict="invalid",
        acknowledged=2,
        recovered=[3],
        disagreement={"n2": {"missing": [3], "extra": []}},
    )


def test_acknowledged_add_missing_on_one_node_is_lost() -> None:
    history = [
        add(0, 1),
        add(1, 2),
        add(2, 3),
        final_read(3, "n1", [1, 2, 3]),
        final_read(4, "n2", [1, 3]),
    ]
    assert check_set(history) == report(
        verdict="invalid",
        lost=[2],
        nodes_read=["n1", "n2"],
        disagreement={"n2": {"missing": [2], "extra": []}},
    )


def test_last_final_read_of_a_node_wins() -> None:
    history = [
        add(0, 1),
        add(1, 2),
        add(2, 3),
        final_read(3, "n1", [1]),
        *reads_of_all_nodes(4, [1, 2, 3]),
    ]
    assert check_set(history) == report()


def test_no_final_read_is_unknown() -> None:
    history = [add(0, 1), add(1, 2), add(2, 3)]
    assert check_set(history) == report(verdict="unknown", nodes_read=[], never_read=3)
