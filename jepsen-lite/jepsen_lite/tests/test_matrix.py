"""The campaign's pure parts: seed specs, cell order, and the table drawn from a ledger."""

import pytest

from jepsen_lite.matrix import cells, parse_seeds, table


def test_seed_specs() -> None:
    assert parse_seeds("101,102") == [101, 102]
    assert parse_seeds("103-106") == [103, 104, 105, 106]
    assert parse_seeds("1, 5-6 ,9") == [1, 5, 6, 9]
    with pytest.raises(ValueError):
        parse_seeds("9-3")
    with pytest.raises(ValueError):
        parse_seeds("x")


def test_cells_are_seed_major() -> None:
    assert cells(["register", "set"], ["kill"], [1, 2]) == [
        ("register", "kill", 1), ("set", "kill", 1), ("register", "kill", 2), ("set", "kill", 2)]


def _record(workload: str, nemesis: str, seed: int, verdict: str, ok: int, fail: int, info: int) -> dict:
    return {"workload": workload, "nemesis": nemesis, "seed": seed, "time_limit_s": 60.0, "verdict": verdict,
            "counts": {"ok": ok, "fail": fail, "info": info}}


def test_table_groups_cells_in_workload_and_nemesis_order() -> None:
    records = [
        _record("set", "pause", 2, "valid", 10, 1, 0),
        _record("register", "partition", 1, "valid", 5, 0, 2),
        _record("register", "kill", 2, "invalid", 3, 3, 3),
        _record("register", "kill", 1, "valid", 1, 2, 3),
        _record("register", "kill", 3, "unknown", 0, 0, 0),
    ]
    assert table(records).splitlines() == [
        "| workload | nemesis | runs x s | seeds | ok / fail / info (sum) | verdicts |",
        "|---|---|---|---|---|---|",
        "| register | kill | 3 x 60 | 1,2,3 | 4 / 5 / 6 | 1 invalid, 1 unknown, 1 valid |",
        "| register | partition | 1 x 60 | 1 | 5 / 0 / 2 | 1 valid |",
        "| set | pause | 1 x 60 | 2 | 10 / 1 / 0 | 1 valid |",
    ]


def test_ledger_skips_a_line_cut_short(tmp_path) -> None:
    from jepsen_lite.matrix import load_ledger
    ledger = tmp_path / "matrix.jsonl"
    ledger.write_text('{"seed": 1}\n{"seed": 2}\n{"seed": 3, "verd')
    assert load_ledger(ledger) == [{"seed": 1}, {"seed": 2}]


def test_table_says_when_rows_mix_settings() -> None:
    records = [dict(_record("set", "kill", 1, "valid", 1, 0, 0), concurrency=6, rate=40.0),
               dict(_record("set", "kill", 2, "valid", 1, 0, 0), concurrency=8, rate=50.0)]
    assert table(records).splitlines()[-1] == "(rows mix runs with different --concurrency / --rate: 6 / 40.0, 8 / 50.0)"
