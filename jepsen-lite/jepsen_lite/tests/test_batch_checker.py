"""The batch checker on hand-written and recorded histories (Porcupine's habit): whole batches
pass, whatever the interleaving of writers; a read that shows part of a batch, two versions of
one, a refused batch, a failed write or a count no set of whole batches makes is invalid; and
linearizable reads (not stale ones) must be linearizable per batch, which also catches an
acknowledged write missing from the final reads."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from jepsen_lite.batch import encode_rows, record_ids, write_body
from jepsen_lite.batch_checker import check_batches
from jepsen_lite.history import Operation, Outcome, load_history, op_from_dict, pair_ops

S = 1_000_000_000
DATA = Path(__file__).parent / "data"


def op(id: int, f: str, call_s: float, return_s: float | None, input: Any = None, output: Any = None,
       outcome: Outcome = "ok", process: int | str | None = None, node: str = "n1") -> Operation:
    return_ns = math.inf if outcome == "info" or return_s is None else int(return_s * S)
    key = f"b{input['batch']}" if isinstance(input, dict) and "batch" in input else None
    return Operation(id, id if process is None else process, node, f, key, input, output, outcome,
                     int(call_s * S), return_ns)


def write(id: int, f: str, batch: int, n: int, version: int, call_s: float, outcome: Outcome = "ok",
          how: str | None = None) -> Operation:
    value = {"batch": batch, "n": n, "version": version, **({"how": how} if how else {})}
    return op(id, f, call_s, call_s + 0.1, value, version if outcome == "ok" else None, outcome)


def delete(id: int, batch: int, n: int, call_s: float, outcome: Outcome = "ok") -> Operation:
    return op(id, "delete-batch", call_s, call_s + 0.1, {"batch": batch, "n": n, "by": "ids"}, {}, outcome)


def rows(*batches: tuple[int, int, int]) -> dict[str, Any]:
    """What a get returned: every record of each (batch, n, version)."""
    ids, metadatas = [], []
    for batch, n, version in batches:
        ids += record_ids(batch, n)
        metadatas += [{"batch": batch, "version": version}] * n
    return encode_rows(ids, metadatas)


def read(id: int, call_s: float, output: dict[str, Any], batch: int | None = None,
         consistency: str = "linearizable") -> Operation:
    if batch is None:
        return op(id, "read-all", call_s, call_s + 0.05, {"consistency": consistency}, output)
    return op(id, "read-batch", call_s, call_s + 0.05, {"batch": batch, "consistency": consistency}, output)


def count(id: int, call_s: float, value: int, consistency: str = "stale") -> Operation:
    return op(id, "count", call_s, call_s + 0.05, {"consistency": consistency}, value)


def final(id: int, node: str, output: dict[str, Any], at_s: float = 100.0) -> Operation:
    return op(id, "read-all", at_s, at_s + 0.1, None, output, process=f"final-{node}", node=node)


def finals(*batches: tuple[int, int, int], first_id: int = 900) -> list[Operation]:
    return [final(first_id + i, node, rows(*batches)) for i, node in enumerate(("n1", "n2", "n3"))]


def valid_history() -> list[Operation]:
    """Two writers, batches 1 (50 rows) and 2 (60 rows), a refused batch 3, stale and
    linearizable reads in between, an upsert that timed out and was seen, a delete."""
    return [
        write(1, "add-batch", 1, 50, 1, 0.0),
        write(2, "add-batch", 2, 60, 2, 0.05),
        read(3, 0.06, rows(), batch=2, consistency="stale"),  # a stale read before the add applied
        read(4, 0.2, rows((1, 50, 1), (2, 60, 2))),
        count(5, 0.21, 110),
        count(6, 0.22, 50, consistency="stale"),  # batch 2 not yet there on a lagging node
        write(7, "upsert-batch", 1, 50, 3, 0.3, outcome="info"),
        read(8, 0.5, rows((1, 50, 3)), batch=1),  # the timed-out upsert happened
        read(9, 0.6, rows((1, 50, 1), (2, 60, 2)), consistency="stale"),  # stale: the old version
        write(10, "refused-batch", 3, 70, 4, 0.7, outcome="fail", how="wrong-dimension"),
        delete(11, 2, 60, 0.8),
        read(12, 1.0, rows((1, 50, 3))),
        count(13, 1.1, 50, consistency="linearizable"),
        read(14, 1.2, rows(), batch=3),
        *finals((1, 50, 3)),
    ]


def test_whole_batches_under_concurrent_writers_are_valid() -> None:
    result = check_batches(valid_history())
    assert result["verdict"] == "valid", result
    assert result["batches"] == 2 and result["refused_batches"] == 1
    assert result["linearizable"]["verdict"] == "valid"
    assert result["final_reads"] == ["n1", "n2", "n3"]


def _with(history: list[Operation], *replacements: Operation) -> list[Operation]:
    by_id = {o.id: o for o in history}
    by_id.update({o.id: o for o in replacements})
    return sorted(by_id.values(), key=lambda o: o.id)


def _torn(batch: int, n: int, version: int, shown: int) -> dict[str, Any]:
    return encode_rows(record_ids(batch, n)[:shown], [{"batch": batch, "version": version}] * shown)


def test_a_read_showing_part_of_an_add_is_torn() -> None:
    for stale in ("stale", "linearizable"):
        result = check_batches(_with(valid_history(), read(4, 0.2, _torn(1, 50, 1, 49), consistency=stale)))
        assert result["verdict"] == "invalid" and result["anomaly_counts"]["torn"] == 1, stale
        assert result["torn"][0]["batch"] == 1 and result["torn"][0]["groups"][0]["rows"] == 49


def test_a_batch_with_two_versions_is_torn() -> None:
    half = record_ids(1, 50)
    mixed = encode_rows(half, [{"batch": 1, "version": 1}] * 25 + [{"batch": 1, "version": 3}] * 25)
    result = check_batches(_with(valid_history(), read(8, 0.5, mixed, batch=1, consistency="stale")))
    assert result["verdict"] == "invalid"
    assert [g["version"] for g in result["torn"][0]["groups"]] == [1, 3]


def test_part_of_a_delete_is_torn() -> None:
    result = check_batches(_with(valid_history(), read(12, 1.0, encode_rows(
        record_ids(1, 50) + record_ids(2, 60)[:10], [{"batch": 1, "version": 3}] * 50 + [{"batch": 2, "version": 2}] * 10))))
    assert result["verdict"] == "invalid" and result["torn"][0]["batch"] == 2


def test_rows_of_a_refused_batch_must_never_show() -> None:
    result = check_batches(_with(valid_history(), read(14, 1.2, rows((3, 70, 4)), batch=3, consistency="stale")))
    assert result["verdict"] == "invalid" and result["anomaly_counts"]["refused_visible"] == 1
    one_row = encode_rows(["b3-0"], [{"batch": 3, "version": 4}])
    result = check_batches(_with(valid_history(), read(14, 1.2, one_row, batch=3)))
    assert result["anomaly_counts"]["refused_visible"] == 1


def test_a_refused_batch_that_is_acknowledged_is_invalid() -> None:
    result = check_batches(_with(valid_history(), write(10, "refused-batch", 3, 70, 4, 0.7, how="mixed-dimensions")))
    assert result["verdict"] == "invalid" and result["anomaly_counts"]["refused_accepted"] == 1


def test_the_version_of_a_failed_write_must_never_show() -> None:
    history = _with(valid_history(), write(7, "upsert-batch", 1, 50, 3, 0.3, outcome="fail"))
    result = check_batches(history)
    assert result["verdict"] == "invalid" and result["anomaly_counts"]["failed_write_visible"] >= 1


def test_a_version_written_after_the_read_returned_is_invalid() -> None:
    history = _with(valid_history(), read(4, 0.2, rows((1, 50, 3), (2, 60, 2)), consistency="stale"))
    result = check_batches(history)
    assert result["verdict"] == "invalid" and result["future_version"][0]["version"] == 3


def test_foreign_and_duplicated_rows_are_reported() -> None:
    strange = encode_rows(record_ids(1, 50) + ["b1-0", "jl-setup"], [{"batch": 1, "version": 3}] * 51 + [None])
    result = check_batches(_with(valid_history(), read(12, 1.0, strange, consistency="stale")))
    assert result["anomaly_counts"]["foreign_rows"] == 1 and result["anomaly_counts"]["torn"] == 1


@pytest.mark.parametrize(("value", "possible"), [(0, True), (50, True), (60, True), (110, True), (55, False),
                                                 (49, False), (120, False), (180, False)])
def test_a_count_must_be_a_sum_of_whole_batches(value: int, possible: bool) -> None:
    """Batches 1 (50) and 2 (60) were written before the count; refused batch 3 (70) never counts."""
    result = check_batches(_with(valid_history(), count(13, 1.1, value)))
    assert (result["anomaly_counts"]["impossible_count"] == 0) is possible, result["impossible_count"]


def test_a_count_may_not_include_a_batch_written_after_it_returned() -> None:
    history = [write(1, "add-batch", 1, 50, 1, 0.0), count(2, 0.2, 100),
               write(3, "add-batch", 2, 50, 2, 0.5), *finals((1, 50, 1), (2, 50, 2))]
    assert check_batches(history)["anomaly_counts"]["impossible_count"] == 1


def test_stale_reads_may_be_old_but_linearizable_ones_may_not() -> None:
    """Negative control: the same old read passes as stale and fails as linearizable."""
    old = rows((1, 50, 1))
    stale = check_batches(_with(valid_history(), read(12, 1.0, old, batch=1, consistency="stale")))
    assert stale["verdict"] == "valid", stale
    lin = check_batches(_with(valid_history(), read(12, 1.0, old, batch=1)))
    assert lin["verdict"] == "invalid" and lin["linearizable"]["verdict"] == "invalid"
    assert lin["linearizable"]["explanation"]["key"] == "b1"


def test_an_acknowledged_batch_missing_from_the_final_reads_is_lost() -> None:
    history = [write(1, "add-batch", 1, 50, 1, 0.0), write(2, "add-batch", 2, 60, 2, 0.1),
               *finals((1, 50, 1))]
    result = check_batches(history)
    assert result["verdict"] == "invalid" and result["linearizable"]["explanation"]["key"] == "b2"


def test_a_timed_out_add_may_or_may_not_have_happened_but_whole() -> None:
    for shown in ((), ((1, 50, 1),)):
        history = [write(1, "add-batch", 1, 50, 1, 0.0, outcome="info"), read(2, 0.5, rows(*shown)),
                   *finals(*shown)]
        assert check_batches(history)["verdict"] == "valid", shown
    history = [write(1, "add-batch", 1, 50, 1, 0.0, outcome="info"), read(2, 0.5, _torn(1, 50, 1, 30)),
               *finals((1, 50, 1))]
    assert check_batches(history)["verdict"] == "invalid"


def test_an_add_after_an_upsert_leaves_the_upserted_version() -> None:
    """Chroma's add leaves existing ids as they are: a late add cannot bring its version back."""
    history = [write(1, "add-batch", 1, 50, 1, 0.0), write(2, "upsert-batch", 1, 50, 2, 0.2),
               write(3, "add-batch", 1, 50, 3, 0.4), read(4, 0.6, rows((1, 50, 2))), *finals((1, 50, 2))]
    assert check_batches(history)["verdict"] == "valid"


def test_without_final_reads_the_verdict_is_unknown() -> None:
    history = [o for o in valid_history() if not str(o.process).startswith("final")]
    assert check_batches(history)["verdict"] == "unknown"


def test_encoding_is_lossless_for_the_checker() -> None:
    body = write_body(7, 60, 9)
    encoded = encode_rows(body["ids"][:20] + body["ids"][30:], body["metadatas"][:50])
    assert encoded["groups"] == [[7, 7, 9, [[0, 19], [30, 59]]]] and encoded["rows"] == 50
    assert encode_rows(["x", "b1-0", "b1-0"], [None, {"batch": 1}, {"batch": 1}])["duplicates"] == [["b1-0", {"batch": 1}]]
    assert json.loads(json.dumps(encoded)) == encoded


# ------------------------------------------------------------ recorded runs


def _recorded() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / "batch-disk-full-history.jsonl").read_text().splitlines() if line]


def _check_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    return check_batches(pair_ops([op_from_dict(r, i) for i, r in enumerate(records)]))


def test_a_recorded_run_with_disk_full_faults_is_valid() -> None:
    """Batch workload, disk-full nemesis on one node and on the leader, seed 2, 15 s."""
    result = check_batches(pair_ops(load_history(DATA / "batch-disk-full-history.jsonl")))
    assert result["verdict"] == "valid", result
    assert result["reads_checked"]["read-all final"] == 3 and result["writes"]["refused-batch"]["fail"] >= 1


def _first_read_all_with_rows(records: list[dict[str, Any]]) -> dict[str, Any]:
    return next(r for r in records if r["f"] == "read-all" and r["type"] == "ok" and r["value"]["groups"])


def test_the_recorded_run_with_one_read_torn_is_invalid() -> None:
    records = _recorded()
    record = _first_read_all_with_rows(records)
    group = record["value"]["groups"][0]
    group[3] = [[group[3][0][0], group[3][-1][1] - 1]]  # the last row of the first batch is missing
    result = _check_records(records)
    assert result["verdict"] == "invalid" and result["torn"][0]["batch"] == group[0]


def test_the_recorded_run_with_a_refused_batch_visible_is_invalid() -> None:
    records = _recorded()
    refused = next(r for r in records if r["f"] == "refused-batch" and r["type"] == "invoke")["value"]
    record = _first_read_all_with_rows(records)
    record["value"]["groups"].append([refused["batch"], refused["batch"], refused["version"], [[0, refused["n"] - 1]]])
    result = _check_records(records)
    assert result["verdict"] == "invalid" and result["anomaly_counts"]["refused_visible"] == 1
