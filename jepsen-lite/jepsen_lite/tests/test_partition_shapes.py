"""The partition shapes (pure): each grudge is symmetric, cuts what its mode promises, and is
the same for the same seed; the nemesis applies and lifts them through the cluster."""

from __future__ import annotations

import itertools

import pytest

from jepsen_lite.nemesis import PARTITION_MODES, grudge_label, partition_grudge, schedule

NODES3 = ["n1", "n2", "n3"]
NODES5 = ["n1", "n2", "n3", "n4", "n5"]


def sees(grudge: dict[str, list[str]], node: str) -> set[str]:
    """The nodes `node` exchanges Raft messages with, itself included."""
    return set(grudge) - set(grudge[node])


def components(grudge: dict[str, list[str]]) -> list[set[str]]:
    """Connected components of the graph of links still up."""
    left, found = set(grudge), []
    while left:
        stack, component = [left.pop()], set()
        while stack:
            node = stack.pop()
            component.add(node)
            stack += [peer for peer in sees(grudge, node) if peer not in component]
        left -= component
        found.append(component)
    return found


@pytest.mark.parametrize("mode", PARTITION_MODES)
@pytest.mark.parametrize("order", [NODES3, ["n3", "n1", "n2"], NODES5, ["n4", "n2", "n5", "n1", "n3"]])
def test_every_grudge_is_symmetric_and_cuts_something(mode: str, order: list[str]) -> None:
    grudge = partition_grudge(mode, order, leader=order[1])
    assert sorted(grudge) == sorted(order)
    for a, b in itertools.permutations(order, 2):
        assert (b in grudge[a]) == (a in grudge[b]), f"{a}-{b} cut on one side only"
    assert all(a not in peers for a, peers in grudge.items())
    assert grudge_label(grudge) != "none"


def test_leader_is_isolated_from_all_others() -> None:
    grudge = partition_grudge("leader", NODES5, leader="n4")
    assert grudge["n4"] == ["n1", "n2", "n3", "n5"]
    assert all(peers == ["n4"] for node, peers in grudge.items() if node != "n4")


def test_leader_mode_without_a_leader_isolates_the_seeded_first_node() -> None:
    grudge = partition_grudge("leader", ["n2", "n3", "n1"], leader=None)
    assert sorted(map(sorted, components(grudge))) == [["n1", "n3"], ["n2"]]
    assert grudge["n2"] == ["n1", "n3"]


@pytest.mark.parametrize(("order", "sizes"), [(NODES3, [1, 2]), (NODES5, [2, 3]), (["n1", "n2", "n3", "n4"], [2, 2])])
def test_halves_split_into_two_groups(order: list[str], sizes: list[int]) -> None:
    parts = components(partition_grudge("halves", order))
    assert sorted(len(p) for p in parts) == sizes
    assert set(order[: len(order) // 2]) in parts


def test_bridge_node_talks_to_both_halves_which_do_not_talk() -> None:
    grudge = partition_grudge("bridge", ["n5", "n3", "n1", "n2", "n4"])
    assert grudge["n1"] == []  # the bridge: order[2]
    assert grudge["n5"] == grudge["n3"] == ["n2", "n4"]
    assert grudge["n2"] == grudge["n4"] == ["n3", "n5"]
    three = partition_grudge("bridge", ["n3", "n1", "n2"])
    assert three == {"n1": [], "n2": ["n3"], "n3": ["n2"]}


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7])
def test_majorities_ring_every_node_sees_a_majority_but_not_the_same_one(n: int) -> None:
    order = [f"n{i}" for i in range(1, n + 1)]
    grudge = partition_grudge("majorities-ring", order)
    views = {node: frozenset(sees(grudge, node)) for node in order}
    assert all(len(v) > n // 2 for v in views.values()), views
    assert len(set(views.values())) > 1, "all nodes see the same majority: that is no ring"
    assert len(components(grudge)) == 1  # nobody is cut off, only links are


def test_majorities_ring_of_three_cuts_one_link_and_of_five_sees_two_neighbours() -> None:
    assert grudge_label(partition_grudge("majorities-ring", ["n2", "n3", "n1"])) == "n1-n2"
    ring5 = partition_grudge("majorities-ring", ["n1", "n3", "n5", "n2", "n4"])
    assert sees(ring5, "n5") == {"n3", "n5", "n2"}
    assert sees(ring5, "n1") == {"n4", "n1", "n3"}


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown partition mode"):
        partition_grudge("random", NODES3)


def test_partition_schedule_is_seeded_and_uses_every_mode() -> None:
    first = schedule(42, ["partition"], 200.0, NODES3)
    assert first == schedule(42, ["partition"], 200.0, ["n3", "n1", "n2"])
    assert first != schedule(43, ["partition"], 200.0, NODES3)
    assert {f.mode for f in first} == set(PARTITION_MODES)
    assert all(sorted(f.targets) == NODES3 for f in first), "a partition's targets are a permutation"
    assert len({f.targets for f in first}) > 1, "the shape's order must vary"
