"""The `collections` workload checker: create / delete collections and add ids into them.

Owns `CollectionsModel` and the final-read check. Each collection name is an independent
linearizability problem over state (exists, ids); the final state read from one node after the
run becomes, per name, a last read whose call follows every completed operation. The search is
linearizability.check; this module must not have a search of its own.

Outputs a client records (all with outcome `ok`, since the server answered definitely):
create: "exists" when it already existed, anything else means created. delete and add:
"missing" when the collection did not exist, anything else means done.
"""

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

from jepsen_lite.history import Operation
from jepsen_lite.linearizability import UNKNOWN, CheckResult, ModelInput, check, freeze

CollectionState = tuple[bool, frozenset[Hashable]]
ABSENT: CollectionState = (False, frozenset())
CREATED: CollectionState = (True, frozenset())
COLLECTION_FS = frozenset({"create", "delete", "add", "final-read"})
FINAL_READ_PROCESS = "final-read"


def _step_create(state: CollectionState, output: Any) -> tuple[bool, CollectionState]:
    exists = state[0]
    if output is UNKNOWN:
        return True, state if exists else CREATED
    if output == "exists":
        return exists, state
    return not exists, CREATED


def _step_delete(state: CollectionState, output: Any) -> tuple[bool, CollectionState]:
    exists = state[0]
    if output is UNKNOWN:
        return True, ABSENT
    if output == "missing":
        return not exists, state
    return exists, ABSENT


def _ids(value: Any) -> frozenset[Hashable]:
    """An add carries one id or a batch of ids (a frozen JSON list arrives as a tuple)."""
    return frozenset(value) if isinstance(value, tuple) else frozenset({value})


def _step_add(state: CollectionState, value: Any, output: Any) -> tuple[bool, CollectionState]:
    exists, ids = state
    grown: CollectionState = (True, ids | _ids(value))
    if output is UNKNOWN:
        return True, grown if exists else state
    if output == "missing":
        return not exists, state
    return exists, grown


class CollectionsModel:
    """Per collection name: whether it exists and which record ids it holds."""

    def init(self) -> Hashable:
        return ABSENT

    def step(self, state: Any, input: ModelInput, output: Any) -> tuple[bool, Any]:
        if input.f == "create":
            return _step_create(state, output)
        if input.f == "delete":
            return _step_delete(state, output)
        if input.f == "add":
            return _step_add(state, input.value, output)
        if input.f == "final-read":
            return output is UNKNOWN or output == state, state
        raise ValueError(f"collections model has no operation {input.f!r}")

    def partition(self, history: Sequence[Operation]) -> dict[Any, list[Operation]]:
        """Per-name histories; failed ops and unanswered final reads have no effect."""
        parts: dict[Any, list[Operation]] = {}
        for op in history:
            if op.f not in COLLECTION_FS or op.outcome == "fail":
                continue
            if op.f == "final-read" and op.outcome != "ok":
                continue
            parts.setdefault(op.key, []).append(op)
        return parts


def final_read_ops(
    history: Sequence[Operation], final_state: Mapping[str, Iterable[Hashable]], node: str
) -> list[Operation]:
    """One synthetic `final-read` per name, called after every operation that returned."""
    finite = [op.return_ns for op in history if not math.isinf(op.return_ns)]
    call_ns = int(max([*finite, *(op.call_ns for op in history), 0])) + 1
    names = sorted({op.key for op in history if op.key is not None} | set(final_state))
    return [
        Operation(
            id=-(i + 1),
            process=FINAL_READ_PROCESS,
            node=node,
            f="final-read",
            key=name,
            input=None,
            output=(True, frozenset(final_state[name])) if name in final_state else ABSENT,
            outcome="ok",
            call_ns=call_ns,
            return_ns=call_ns + 1,
        )
        for i, name in enumerate(names)
    ]


def drop_unseen_info_adds(
    ops: Sequence[Operation], final_state: Mapping[str, Iterable[Hashable]]
) -> list[Operation]:
    """Removes info adds none of whose ids is in the final state of their collection. Only the
    final read observes ids, and add never changes whether a collection exists, so such an
    add, if it happened, was undone by a delete: leaving it out changes nothing observable.
    This keeps runs with many timed-out adds from an exponential search over their subsets."""
    final_ids = {name: frozenset(ids) for name, ids in final_state.items()}

    def seen(op: Operation) -> bool:
        batch = _ids(freeze(op.input))
        return bool(batch & final_ids.get(str(op.key), frozenset()))

    return [op for op in ops if op.f != "add" or op.outcome != "info" or seen(op)]


def check_collections(
    history: Sequence[Operation],
    final_state: Mapping[str, Iterable[Hashable]],
    time_budget_s: float,
    final_node: str = "final",
) -> CheckResult:
    """Valid iff, for every name, some real-time-consistent order of the operations that may
    have happened explains the final state read from `final_node`."""
    ops = [op for op in history if op.f in COLLECTION_FS - {"final-read"}]
    finals = final_read_ops(ops, final_state, final_node)
    kept = drop_unseen_info_adds(ops, final_state)
    return check([*kept, *finals], CollectionsModel(), time_budget_s)
