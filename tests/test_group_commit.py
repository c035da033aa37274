"""Group commit (raftchroma/group_commit.py): the batching policy against a scripted proposer, then
on a real cluster: concurrent writes share entries, each keeps its own answer, and one bad write
in a group fails alone."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from raftchroma.command import Barrier, Proposal, decode_entry, encode_entry
from raftchroma.group_commit import GroupCommit
from tests.harness import Cluster, http


class Proposer:
    """Records each proposed entry; the test answers them (as Raft would, on another thread)."""

    def __init__(self) -> None:
        self.entries: list[tuple[bytes, Callable[[Any, int], None]]] = []

    def __call__(self, entry: bytes, callback: Callable[[Any, int], None]) -> None:
        self.entries.append((entry, callback))

    def sizes(self) -> list[int]:
        return [len(decode_entry(entry)) for entry, _ in self.entries]


def proposal() -> tuple[Proposal, bytes]:
    p = Proposal(Barrier())
    return p, encode_entry([p])


def run(body: Callable[[asyncio.AbstractEventLoop, GroupCommit, Proposer, list[int]], Any], **kwargs: Any) -> Any:
    async def main() -> Any:
        loop = asyncio.get_running_loop()
        proposer, answers = Proposer(), []
        group = GroupCommit(loop, proposer, lambda fn, *args: loop.call_soon_threadsafe(fn, *args), **kwargs)
        return await body(loop, group, proposer, answers)
    return asyncio.run(main())


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_a_lone_write_is_proposed_at_once_and_writes_behind_it_share_the_next_entry() -> None:
    async def body(loop, group, proposer, answers):
        group.submit(*proposal(), answers.append)
        await settle()
        assert proposer.sizes() == [1]
        for _ in range(5):
            group.submit(*proposal(), answers.append)
        await settle()
        assert proposer.sizes() == [1]  # waiting: an entry is in flight and the window is open
        proposer.entries[0][1](None, 0)  # the first entry commits: the group goes at once
        await settle()
        assert proposer.sizes() == [1, 5] and answers == [0]
        proposer.entries[1][1](None, 0)
        await settle()
        assert answers == [0] * 6
    run(body, window_s=10.0)


def test_the_window_closes_a_group_while_an_entry_is_still_in_flight() -> None:
    async def body(loop, group, proposer, answers):
        group.submit(*proposal(), answers.append)
        await settle()
        group.submit(*proposal(), answers.append)
        group.submit(*proposal(), answers.append)
        await asyncio.sleep(0.05)
        assert proposer.sizes() == [1, 2]
    run(body, window_s=0.001)


def test_a_group_is_cut_at_its_count_and_a_big_proposal_goes_alone() -> None:
    async def body(loop, group, proposer, answers):
        group.submit(*proposal(), answers.append)
        await settle()
        for _ in range(7):
            group.submit(*proposal(), answers.append)
        assert proposer.sizes() == [1, 3, 3]  # cut at 3 without waiting; one still open
    run(body, window_s=10.0, max_count=3)


def test_a_failed_entry_fails_every_write_in_it() -> None:
    async def body(loop, group, proposer, answers):
        group.submit(*proposal(), answers.append)
        await settle()
        group.submit(*proposal(), answers.append)
        group.submit(*proposal(), answers.append)
        proposer.entries[0][1](None, 0)
        await settle()
        proposer.entries[1][1](None, 3)
        await settle()
        assert answers == [0, 3, 3]
    run(body, window_s=10.0)


def test_a_proposal_at_the_byte_limit_is_proposed_alone_already_encoded() -> None:
    async def body(loop, group, proposer, answers):
        p, entry = proposal()
        group.submit(p, entry, answers.append)
        await settle()
        assert proposer.entries[0][0] == entry
    run(body, max_bytes=1)


# ---------------------------------------------------------------- a real cluster

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"


def test_concurrent_writes_share_entries_and_each_keeps_its_own_answer(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n != leader)
    url = cluster.node(follower).url
    col = cluster.node(follower).client().get_or_create_collection("group-commit")
    col.upsert(ids=["seed"], embeddings=[[0.0, 0.0]])
    before = cluster.node(follower).answered_status()["group_commit"]

    def write(i: int) -> tuple[int, Any]:
        embedding = [[float(i), 1.0, 2.0]] if i % 8 == 7 else [[float(i), 1.0]]  # every 8th: wrong dimension
        status, _, body = http("POST", f"{url}{SCOPE}/collections/{col.id}/upsert",
                               {"ids": [f"w{i}"], "embeddings": embedding, "metadatas": [{"i": i}]})
        return status, body

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(write, range(96)))
    for i, (status, body) in enumerate(results):
        if i % 8 == 7:
            assert status == 400 and body["error"] == "InvalidArgumentError", (i, body)
        else:
            assert status == 200, (i, body)
    after = cluster.node(follower).answered_status()["group_commit"]
    writes, entries = after["writes"] - before["writes"], after["entries"] - before["entries"]
    assert writes == 96
    assert entries < writes, f"{entries} entries for {writes} concurrent writes: nothing was grouped"
    for node_id in cluster.nodes:
        got = cluster.node(node_id).client().get_collection("group-commit").get(include=["metadatas"])
        assert sorted(got["ids"]) == sorted(["seed"] + [f"w{i}" for i in range(96) if i % 8 != 7])
