"""Register histories with known answers, valid and invalid, as Porcupine tests its checker."""

import itertools
import json
import random

from jepsen_lite.history import Operation
from jepsen_lite.linearizability import CheckResult, RegisterModel, check
from jepsen_lite.tests._builders import ids, operation, read, write

BUDGET_S = 10.0


def run(*ops: object) -> CheckResult:
    return check(list(ops), RegisterModel(), BUDGET_S)  # type: ignore[arg-type]


def test_empty_history_is_valid() -> None:
    assert run().verdict == "valid"


def test_concurrent_writes_and_reads_valid() -> None:
    result = run(
        write(0, 1, 0, 10),
        write(1, 2, 5, 15),
        read(2, 1, 6, 8),
        read(3, 2, 16, 20),
    )
    assert (result.verdict, result.keys_total, result.explanation) == ("valid", 1, None)


def test_read_of_absent_key_before_any_write_is_valid() -> None:
    assert run(read(0, None, 0, 1), write(1, 1, 2, 3), read(2, 1, 4, 5)).verdict == "valid"


def test_stale_read_is_invalid() -> None:
    result = run(write(0, 1, 0, 10), write(1, 2, 11, 20), read(2, 1, 21, 30))
    assert result.verdict == "invalid"
    assert result.explanation is not None
    assert ids(result.explanation.prefix) == [0, 1]
    assert result.explanation.state_after_prefix == 2
    assert ids(result.explanation.stuck) == [2]


def test_lost_acknowledged_write_is_invalid() -> None:
    result = run(write(0, 1, 0, 10), read(1, None, 20, 30))
    assert result.verdict == "invalid"
    assert result.explanation is not None
    assert ids(result.explanation.prefix) == [0]
    assert ids(result.explanation.stuck) == [1]


def test_failed_write_is_dropped() -> None:
    assert run(write(0, 1, 0, 10), write(1, 2, 11, 20, "fail"), read(2, 1, 21, 30)).verdict == (
        "valid"
    )


def test_read_of_failed_write_is_invalid() -> None:
    result = run(write(0, 1, 0, 10), write(1, 2, 11, 20, "fail"), read(2, 2, 21, 30))
    assert result.verdict == "invalid"


def test_info_write_that_happened_is_valid() -> None:
    result = run(write(0, 1, 0, 10), write(1, 2, 20, None, "info"), read(2, 2, 30, 40))
    assert result.verdict == "valid"


def test_info_write_that_never_happened_is_valid() -> None:
    result = run(
        write(0, 1, 0, 10), write(1, 2, 20, None, "info"), read(2, 1, 30, 40), read(3, 1, 50, 60)
    )
    assert result.verdict == "valid"


def test_info_write_seen_then_unseen_is_invalid() -> None:
    result = run(
        write(0, 1, 0, 10), write(1, 2, 20, None, "info"), read(2, 2, 30, 40), read(3, 1, 50, 60)
    )
    assert result.verdict == "invalid"
    assert result.explanation is not None
    assert ids(result.explanation.prefix) == [0, 1, 2]
    assert ids(result.explanation.stuck) == [3]


def test_info_write_cannot_take_effect_before_its_call() -> None:
    result = run(read(0, 2, 0, 10), write(1, 2, 20, None, "info"))
    assert result.verdict == "invalid"


def test_info_read_is_dropped() -> None:
    result = run(write(0, 1, 0, 10), operation(1, "read", None, 99, "info", 20))
    assert result.verdict == "valid"


def test_reads_seeing_writes_in_inconsistent_orders_is_invalid() -> None:
    result = run(
        write(0, 1, 0, 100),
        write(1, 2, 0, 100),
        read(2, 1, 10, 20),
        read(3, 2, 10, 20),
        read(4, 2, 30, 40),
        read(5, 1, 30, 40),
    )
    assert result.verdict == "invalid"
    assert result.explanation is not None
    explanation = result.explanation.to_dict()
    json.dumps(explanation)
    assert explanation["key"] == "k"
    assert explanation["prefix_ids"] == [0, 2, 1, 3, 4]
    assert explanation["state_after_prefix"] == 2
    assert [
        (op["id"], op["f"], op["output"], op["call_ns"], op["return_ns"])
        for op in explanation["stuck"]
    ] == [(5, "read", 1, 30, 40)]


def test_keys_are_checked_independently_and_invalid_key_is_named() -> None:
    result = run(
        write(0, 1, 0, 10, key="a"),
        write(1, 1, 0, 10, key="b"),
        read(2, 1, 20, 30, key="a"),
        read(3, None, 20, 30, key="b"),
    )
    assert result.verdict == "invalid"
    assert result.explanation is not None
    assert result.explanation.key == "b"
    assert ids(result.explanation.stuck) == [3]


def test_json_values_are_compared_structurally() -> None:
    result = run(write(0, {"a": [1, 2]}, 0, 10), read(1, {"a": [1, 2]}, 20, 30))
    assert result.verdict == "valid"


def test_tiny_budget_on_ambiguous_history_is_unknown() -> None:
    # Every info write is read, so none can be pruned; the search needs w0 then r0 but tries
    # the other writes first, an exponential detour that the budget cuts short.
    writes = [write(i, i, 0, None, "info") for i in range(40)]
    reads = [read(40 + i, i, 100 + 10 * i, 105 + 10 * i) for i in range(40)]
    result = check([*writes, *reads], RegisterModel(), time_budget_s=0.001)
    assert result.verdict == "unknown"
    assert result.unknown_keys == ("k",)
    assert result.explanation is None
    assert result.elapsed_s < 1.0


def test_unread_info_writes_are_pruned_so_search_stays_small() -> None:
    writes = [write(i, i, 0, None, "info") for i in range(40)]
    reads = [read(40, 1, 100, 101), read(41, 2, 102, 103), read(42, 1, 104, 105)]
    result = check([*writes, *reads], RegisterModel(), time_budget_s=BUDGET_S)
    assert result.verdict == "invalid"
    assert result.explanation is not None
    assert ids(result.explanation.prefix) == [1, 40, 2, 41]
    assert ids(result.explanation.stuck) == [42]


def test_large_sequential_history_is_valid_in_time() -> None:
    ops = []
    for i in range(1000):
        ops.append(write(2 * i, i, 10 * i, 10 * i + 4))
        ops.append(read(2 * i + 1, i, 10 * i + 5, 10 * i + 9))
    result = check(ops, RegisterModel(), time_budget_s=BUDGET_S)
    assert len(ops) == 2000
    assert result.verdict == "valid"
    assert result.elapsed_s < BUDGET_S


def test_large_sequential_history_with_late_stale_read_is_invalid() -> None:
    ops = [write(i, i, 10 * i, 10 * i + 4) for i in range(2000)]
    ops.append(read(2000, 1998, 30_000, 30_001))
    result = check(ops, RegisterModel(), time_budget_s=BUDGET_S)
    assert result.verdict == "invalid"
    assert result.explanation is not None
    assert len(result.explanation.prefix) == 2000
    assert ids(result.explanation.stuck) == [2000]


def brute_force_linearizable(ops: list[Operation]) -> bool:
    """Tries every order of every allowed subset: ok ops always, info writes optionally."""
    happened = [op for op in ops if op.outcome == "ok" or (op.f, op.outcome) == ("write", "info")]
    optional = [op for op in happened if op.outcome == "info"]
    for n in range(len(optional) + 1):
        for omitted in itertools.combinations(optional, n):
            chosen = [op for op in happened if op not in omitted]
            if any(replays(order) for order in itertools.permutations(chosen)):
                return True
    return False


def replays(order: tuple[Operation, ...]) -> bool:
    """Whether `order` respects real time and the register's sequential behaviour."""
    for i, earlier in enumerate(order):
        if any(later.return_ns < earlier.call_ns for later in order[i + 1 :]):
            return False
    state = None
    for op in order:
        if op.f == "write":
            state = op.input
        elif op.output != state:
            return False
    return True


def random_history(rng: random.Random, size: int) -> list[Operation]:
    ops = []
    for i in range(size):
        call_ns = rng.randrange(0, 20)
        return_ns = call_ns + rng.randrange(0, 10)
        if rng.random() < 0.5:
            outcome = rng.choice(["ok", "ok", "info", "fail"])
            ops.append(write(i, rng.randrange(1, 4), call_ns, return_ns, outcome))  # type: ignore[arg-type]
        else:
            ops.append(read(i, rng.choice([None, 1, 2, 3]), call_ns, return_ns))
    return ops


def test_agrees_with_brute_force_on_random_small_histories() -> None:
    rng = random.Random(20240601)
    verdicts = []
    for _ in range(400):
        ops = random_history(rng, rng.randrange(1, 7))
        verdict = check(ops, RegisterModel(), BUDGET_S).verdict
        assert verdict == ("valid" if brute_force_linearizable(ops) else "invalid"), ops
        verdicts.append(verdict)
    assert {"valid", "invalid"} <= set(verdicts)
