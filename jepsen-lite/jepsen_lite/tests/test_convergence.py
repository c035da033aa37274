"""The convergence check on per-node digest maps."""

from jepsen_lite.convergence import check_convergence


def test_identical_maps_are_valid() -> None:
    digests = {"n1": {"a": "x1", "b": "y1"}, "n2": {"a": "x1", "b": "y1"}}
    assert check_convergence(digests) == {
        "verdict": "valid",
        "nodes": ["n1", "n2"],
        "differing_nodes": [],
        "differing_collections": {},
    }


def test_differing_digest_names_node_and_collection() -> None:
    digests = {
        "n1": {"a": "x1", "b": "y1"},
        "n2": {"a": "x1", "b": "y2"},
        "n3": {"a": "x1", "b": "y1"},
    }
    assert check_convergence(digests) == {
        "verdict": "invalid",
        "nodes": ["n1", "n2", "n3"],
        "differing_nodes": ["n2"],
        "differing_collections": {"b": {"n1": "y1", "n2": "y2", "n3": "y1"}},
    }


def test_collection_missing_on_a_node_is_invalid() -> None:
    digests = {"n1": {"a": "x1"}, "n2": {"a": "x1", "c": "z1"}, "n3": {"a": "x1", "c": "z1"}}
    assert check_convergence(digests) == {
        "verdict": "invalid",
        "nodes": ["n1", "n2", "n3"],
        "differing_nodes": ["n1"],
        "differing_collections": {"c": {"n1": None, "n2": "z1", "n3": "z1"}},
    }


def test_single_node_is_valid() -> None:
    assert check_convergence({"n1": {"a": "x"}})["verdict"] == "valid"


def test_no_nodes_is_unknown() -> None:
    assert check_convergence({}) == {
        "verdict": "unknown",
        "nodes": [],
        "differing_nodes": [],
        "differing_collections": {},
    }
