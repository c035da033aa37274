"""The command line's pure parts: where runs go by default, `--out`, the workloads and nemeses
`run` and `matrix` accept, and collection names in the convergence check."""

from __future__ import annotations

from pathlib import Path

import pytest

from jepsen_lite import matrix, nemesis, workloads
from jepsen_lite.__main__ import _nemeses, _parser
from jepsen_lite.convergence import check_convergence
from jepsen_lite.runner import _digest_map, default_out_dir

JEPSEN_LITE_DIR = Path(__file__).resolve().parents[2]


def test_runs_go_to_the_xdg_state_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home_default = tmp_path / "home/.local/state/raftchroma/jepsen-lite"
    assert default_out_dir({}) == home_default
    assert default_out_dir({"XDG_STATE_HOME": str(tmp_path / "state")}) == tmp_path / "state/raftchroma/jepsen-lite"
    assert default_out_dir({"XDG_STATE_HOME": "relative/state"}) == home_default, "a relative one is ignored"


def test_the_default_is_outside_the_source_tree_whatever_the_working_directory(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.chdir(JEPSEN_LITE_DIR.parent)
    args = _parser().parse_args(["run", "--workload", "hostile"])
    assert args.store == default_out_dir() and args.store.is_absolute()
    assert not args.store.is_relative_to(JEPSEN_LITE_DIR.parent)


def test_out_and_its_old_name_store_set_the_same_option(tmp_path: Path) -> None:
    for flag in ("--out", "--store"):
        assert _parser().parse_args(["run", "--workload", "set", flag, str(tmp_path)]).store == tmp_path
        assert _parser().parse_args(["matrix", "--seeds", "1", flag, str(tmp_path)]).store == tmp_path


def test_run_and_matrix_know_the_hostile_workload() -> None:
    assert set(matrix.WORKLOADS) == set(workloads.WORKLOADS)
    assert "hostile" in matrix.WORKLOADS
    assert _parser().parse_args(["run", "--workload", "hostile"]).workload == "hostile"
    assert matrix.cells(["hostile"], ["kill"], [1]) == [("hostile", "kill", 1)]


def test_run_and_matrix_know_the_batch_workload_and_the_disk_nemeses() -> None:
    assert "batch" in matrix.WORKLOADS and {"disk-full", "apply-fail"} <= set(matrix.NEMESES)
    assert set(matrix.NEMESES) == set(nemesis.KINDS)
    args = _parser().parse_args(["run", "--workload", "batch", "--nemesis", "disk-full,apply-fail"])
    assert args.workload == "batch" and _nemeses(args.nemesis) == ("disk-full", "apply-fail")
    assert matrix.cells(["batch"], ["disk-full", "apply-fail"], [1]) == [("batch", "disk-full", 1),
                                                                         ("batch", "apply-fail", 1)]


def test_digests_recorded_with_names_compare_the_names_too() -> None:
    same = {"collections": {"c1": "d1"}, "names": {"c1": "t/db/jl-set"}}
    renamed = {"collections": {"c1": "d1"}, "names": {"c1": "t/db/other"}}
    assert _digest_map(same) == {"c1": "d1", "name:c1": "t/db/jl-set"}
    assert _digest_map({"c1": "d1"}) == {"c1": "d1"}, "runs recorded before names were kept"
    result = check_convergence({"n1": _digest_map(same), "n2": _digest_map(same), "n3": _digest_map(renamed)})
    assert (result["verdict"], result["differing_nodes"]) == ("invalid", ["n3"])
