"""The hostile checker on hand-written histories: availability after hostile requests (with
fault windows excused, and a negative control without them), the final probes, the set verdict
over normal writes, and InternalError answers counted."""

from __future__ import annotations

import math
from typing import Any

from jepsen_lite.history import Op, Operation, Outcome
from jepsen_lite.hostile_checker import advance_quiet, check_availability, check_hostile, summarize_replies

S = 1_000_000_000


def op(id: int, f: str, call_s: float, return_s: float | None, outcome: Outcome = "ok", input: Any = None,
       output: Any = None, process: int | str | None = None) -> Operation:
    return_ns = math.inf if outcome == "info" or return_s is None else int(return_s * S)
    return Operation(id, id if process is None else process, "n1", f, None, input, output, outcome,
                     int(call_s * S), return_ns)


def add(id: int, call_s: float, outcome: Outcome = "ok") -> Operation:
    return op(id, "add", call_s, call_s + 0.05, outcome, input=f"w{id}", output=f"w{id}" if outcome == "ok" else None)


def hostile(id: int, call_s: float, outcome: Outcome = "fail",
            replies: list[dict[str, Any]] | None = None) -> Operation:
    spec = {"kind": "create-tenant", "path": "/tenants", "body": {"name": "disk is full"}, "repeat": 2}
    return op(id, "h-create-tenant", call_s, call_s + 0.1, outcome, input=spec, output=replies or [])


def probe(id: int, node: str, outcome: Outcome) -> Operation:
    return op(id, "add", 100.0 + id / 10, 100.05 + id / 10, outcome, input=f"probe-{node}",
              output=f"probe-{node}" if outcome == "ok" else None, process=f"final-probe-{node}-0")


def final_read(id: int, node: str, ids: list[str]) -> Operation:
    return Operation(id, f"final-{node}", node, "final-read", None, None, ids, "ok", 110 * S + id, 110 * S + id + 1)


def nemesis(index: int, f: str, type_: str, at_s: float) -> Op:
    return Op("nemesis", "n2", f, None, None, type_, int(at_s * S), index)  # type: ignore[arg-type]


def heal_at(at_s: float) -> list[Op]:
    return [nemesis(900, "heal", "invoke", at_s), nemesis(901, "heal", "ok", at_s + 0.1)]


def kill(start_s: float, end_s: float, index: int = 800) -> list[Op]:
    return [nemesis(index, "kill-start", "invoke", start_s), nemesis(index + 1, "kill-start", "ok", start_s),
            nemesis(index + 2, "kill-stop", "invoke", end_s), nemesis(index + 3, "kill-stop", "ok", end_s)]


def probes(outcome: Outcome) -> list[Operation]:
    return [probe(500 + i, node, outcome) for i, node in enumerate(("n1", "n2", "n3"))]


# ------------------------------------------------------------- quiet time


def test_advance_quiet_skips_fault_time() -> None:
    assert advance_quiet(10, 5, []) == 15
    assert advance_quiet(10, 5, [(12, 20)]) == 23, "2 quiet before the fault, 3 after it"
    assert advance_quiet(10, 5, [(5, 12)]) == 17, "a fault in force at the start"
    assert advance_quiet(10, 5, [(30, 40), (12, 13)]) == 16, "unsorted; a later fault changes nothing"


# ----------------------------------------------------------- availability


def test_a_write_acknowledged_after_each_hostile_op_is_valid() -> None:
    history = [hostile(1, 1.0), add(2, 2.0), hostile(3, 3.0), add(4, 3.5), *probes("ok")]
    result = check_availability(history, heal_at(30.0))
    assert result["verdict"] == "valid"
    assert (result["hostile_ops"], result["unavailable"], result["longest_wait_s"]) == (2, 0, 0.9)
    assert result["final_probes"] == {"attempted": 3, "ok": 3}


def test_writes_that_stop_being_acknowledged_after_a_hostile_op_are_invalid_and_name_it() -> None:
    """The wedge: two creates of tenant "disk is full" and no write is acknowledged again."""
    history = [add(1, 0.5), hostile(2, 1.0, "info"), *[add(10 + i, 2.0 + i, "info") for i in range(25)],
               *probes("info")]
    result = check_availability(history, heal_at(30.0))
    assert result["verdict"] == "invalid"
    first = result["unavailable_examples"][0]
    assert (first["id"], first["judged_by"], first["writes_in_window"]) == (2, "window", {"info": 15})
    assert first["window_s"] == [5.5, 20.5], "an info op's window starts at its call + the client timeout"
    assert [s["id"] for s in result["suspects"]] == [2]
    assert result["suspects"][0]["body"] == {"name": "disk is full"}
    assert result["final_probes"] == {"attempted": 3, "ok": 0}


def test_suspects_rank_unconfirmed_writes_then_internal_errors_and_leave_out_what_did_nothing() -> None:
    answered = [{"status": 500, "error": "InternalError", "message": "UNIQUE constraint failed", "outcome": "info"}]
    refused = [{"status": 400, "error": "InvalidArgumentError", "message": "no", "outcome": "fail"}]
    wedging = [{"status": 200, "error": None, "message": None, "outcome": "ok"},
               {"status": None, "error": "connection-lost: RemoteDisconnected", "message": None, "outcome": "info"}]
    after = [{"status": 504, "error": "WriteOutcomeUnknown", "message": "maybe", "outcome": "info"}]
    fine = [{"status": 200, "error": None, "message": None, "outcome": "ok"}]
    history = [add(1, 0.5), hostile(2, 0.7, "ok", fine), hostile(3, 0.8, "info", answered),
               hostile(4, 0.9, "fail", refused), hostile(5, 1.0, "info", wedging), hostile(6, 1.5, "info", after),
               *[add(10 + i, 2.0 + i, "info") for i in range(25)], *probes("info")]
    result = check_availability(history, heal_at(30.0))
    assert [s["id"] for s in result["suspects"]] == [5, 6, 3, 2]


def test_fault_windows_are_excused_and_without_them_the_same_writes_are_invalid() -> None:
    """Negative control: the same history, judged without its kill, is invalid."""
    history = [hostile(1, 1.0), *[add(10 + i, 2.0 + i, "fail") for i in range(17)], add(40, 20.0),
               *probes("ok")]
    faults = kill(1.5, 19.5)
    assert check_availability(history, faults + heal_at(30.0))["verdict"] == "valid"
    assert check_availability(history, heal_at(30.0))["verdict"] == "invalid"


def test_a_write_acknowledged_before_an_info_op_may_have_taken_effect_does_not_count() -> None:
    history = [hostile(1, 1.0, "info"), add(2, 3.0), *[add(10 + i, 7.0 + i, "info") for i in range(15)],
               *probes("ok")]
    assert check_availability(history, heal_at(30.0))["verdict"] == "invalid"


def test_a_window_cut_short_by_the_end_of_the_run_is_judged_by_the_final_probes() -> None:
    history = [add(1, 20.0), hostile(2, 25.0), add(3, 26.0, "info")]
    ok = check_availability([*history, *probes("ok")], heal_at(30.0))
    assert (ok["verdict"], ok["unavailable"]) == ("valid", 0)
    bad = check_availability([*history, *probes("info")], heal_at(30.0))
    assert bad["verdict"] == "invalid" and bad["unavailable_examples"][0]["judged_by"] == "final-probes"
    assert check_availability(history, heal_at(30.0))["verdict"] == "unknown", "no probe: cannot tell"


def test_no_final_probe_acknowledged_is_invalid_even_without_hostile_ops() -> None:
    result = check_availability([add(1, 1.0), *probes("fail")], heal_at(30.0))
    assert (result["verdict"], result["hostile_ops"]) == ("invalid", 0)


# --------------------------------------------------------- whole verdict


def test_a_lost_acknowledged_write_is_invalid() -> None:
    history = [add(1, 1.0), hostile(2, 1.5), add(3, 2.0), *probes("ok"),
               *[final_read(600 + i, node, ["probe-n1", "probe-n2", "probe-n3", "w1"])
                 for i, node in enumerate(("n1", "n2", "n3"))]]
    result = check_hostile(history, heal_at(30.0))
    assert result["verdict"] == "invalid"
    assert (result["availability"]["verdict"], result["set"]["lost"]) == ("valid", ["w3"])


def test_hostile_ops_are_not_set_elements_and_a_clean_run_is_valid() -> None:
    everything = ["probe-n1", "probe-n2", "probe-n3", "w1", "w3"]
    history = [add(1, 1.0), hostile(2, 1.5, "ok"), add(3, 2.0), *probes("ok"),
               *[final_read(600 + i, node, everything) for i, node in enumerate(("n1", "n2", "n3"))]]
    result = check_hostile(history, heal_at(30.0))
    assert result["verdict"] == "valid"
    assert (result["set"]["attempted"], result["set"]["unexpected"]) == (5, [])


def test_internal_errors_are_counted_and_shown_but_do_not_decide_the_verdict() -> None:
    replies = [{"status": 200, "error": None, "message": None, "outcome": "ok"},
               {"status": 500, "error": "InternalError", "message": "UNIQUE constraint failed", "outcome": "info"}]
    history = [hostile(1, 1.0, "info", replies), hostile(2, 1.2, "fail", [
        {"status": 409, "error": "ChromaError", "message": "Tenant [x] already exists", "outcome": "fail"},
        {"status": None, "error": "timeout", "message": None, "outcome": "info"}]), add(3, 7.0), *probes("ok")]
    summary = summarize_replies(history)
    assert summary["by_f"] == {"h-create-tenant": {"200": 1, "409": 1, "500": 1, "timeout": 1}}
    assert (summary["internal_errors"], summary["internal_errors_by_f"]) == (1, {"h-create-tenant": 1})
    assert summary["internal_error_examples"][0]["message"] == "UNIQUE constraint failed"
    assert check_availability(history, heal_at(30.0))["verdict"] == "valid"
