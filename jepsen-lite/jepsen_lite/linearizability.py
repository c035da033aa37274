"""Linearizability checking in the style of Porcupine, generic over a `Model`.

Owns the search: Wing & Gong's algorithm, made iterative, with Lowe's memoisation of
(linearized-set bitset, state) pairs and P-compositionality (each key is checked on its own).
Also owns `RegisterModel`, the model of the `register` workload. It must not read histories from
disk, and knows nothing about a workload beyond the Model it is handed.

Outcomes: `ok` operations must be linearized inside [call, return]; `fail` operations certainly
did not happen and are dropped; `info` operations have return time +inf and an UNKNOWN output, so
they may be linearized at any point after their call. Linearizing one after every other operation
is unobservable, which is how "it never happened" is expressed.
"""

import enum
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

from jepsen_lite.history import Operation

Verdict = Literal["valid", "invalid", "unknown"]

NIL = -1
HEAD = 0
CLOCK_EVERY_STEPS = 256
MAX_CACHE_ENTRIES_DEFAULT = 4_000_000
PREFIX_TAIL_OPS_MAX = 10


class _Unknown(enum.Enum):
    UNKNOWN = "unknown"


UNKNOWN = _Unknown.UNKNOWN
"""The output a model sees for an `info` operation: any output is acceptable."""


class ModelInput(NamedTuple):
    """What the model is asked to apply: the function name and its (frozen) input value."""

    f: str
    value: Any


class Model(Protocol):
    """A pure sequential specification; states must be hashable for memoisation."""

    def init(self) -> Hashable:
        """The state before any operation."""
        ...

    def step(self, state: Any, input: ModelInput, output: Any) -> tuple[bool, Any]:
        """Whether `input` may return `output` in `state`, and the state after it.

        `output` is UNKNOWN for an `info` op: step must then accept it in every state (doing
        whatever a real call would have done there), since the search may place it anywhere
        after its call, and placing it last is how "it never happened" is expressed.
        """
        ...

    def partition(self, history: Sequence[Operation]) -> dict[Any, list[Operation]]:
        """Independent sub-histories (P-compositionality), without ops that have no effect."""
        ...


@dataclass(frozen=True)
class Explanation:
    """Why a key is not linearizable: the longest linearizable prefix the search reached, and
    the operations that could come next in real time, none of which the model accepts."""

    key: Any
    prefix: tuple[Operation, ...]
    state_after_prefix: Any
    stuck: tuple[Operation, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary; only the tail of a long prefix is spelled out."""
        return {
            "key": self.key,
            "prefix_length": len(self.prefix),
            "prefix_ids": [op.id for op in self.prefix],
            "prefix_tail": [_op_dict(op) for op in self.prefix[-PREFIX_TAIL_OPS_MAX:]],
            "state_after_prefix": jsonable(self.state_after_prefix),
            "stuck": [_op_dict(op) for op in self.stuck],
        }


def _op_dict(op: Operation) -> dict[str, Any]:
    """Operation.to_dict, with values a model may have built (sets, tuples) made JSON-safe."""
    d = op.to_dict()
    d["input"], d["output"] = jsonable(op.input), jsonable(op.output)
    return d


@dataclass(frozen=True)
class CheckResult:
    """The answer for a whole history: `unknown` means the budget ran out before a verdict."""

    verdict: Verdict
    keys_total: int
    keys_checked: int
    elapsed_s: float
    unknown_keys: tuple[Any, ...] = ()
    explanation: Explanation | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe view for reports."""
        return {
            "verdict": self.verdict,
            "keys_total": self.keys_total,
            "keys_checked": self.keys_checked,
            "elapsed_s": self.elapsed_s,
            "unknown_keys": list(self.unknown_keys),
            "explanation": None if self.explanation is None else self.explanation.to_dict(),
        }


def freeze(value: Any) -> Hashable:
    """Turns a JSON value into a hashable one (lists to tuples, dicts to sorted item tuples)."""
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, set | frozenset):
        return frozenset(freeze(item) for item in value)
    if not isinstance(value, Hashable):
        raise TypeError(f"not a JSON value: {value!r}")
    return value


def jsonable(value: Any) -> Any:
    """Undoes `freeze` enough for json.dumps: sets become sorted lists, tuples lists."""
    if isinstance(value, set | frozenset):
        return sorted((jsonable(item) for item in value), key=repr)
    if isinstance(value, tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, _Unknown):
        return value.value
    return value


class RegisterModel:
    """One register per key: `write(v)` sets it, `read() -> v` observes it; None is absent."""

    def init(self) -> Hashable:
        return None

    def step(self, state: Any, input: ModelInput, output: Any) -> tuple[bool, Any]:
        if input.f == "write":
            return True, input.value
        if input.f == "read":
            return output is UNKNOWN or output == state, state
        raise ValueError(f"register model has no operation {input.f!r}")

    def partition(self, history: Sequence[Operation]) -> dict[Any, list[Operation]]:
        """Per-key histories of reads and writes. Failed ops did not happen; a read whose
        outcome is unknown observed nothing, so both are dropped. Info writes stay, unless
        no read returned their value (see `drop_unread_info_writes`)."""
        parts: dict[Any, list[Operation]] = {}
        for op in history:
            if op.f not in ("read", "write") or op.outcome == "fail":
                continue
            if op.f == "read" and op.outcome != "ok":
                continue
            parts.setdefault(op.key, []).append(op)
        return {key: drop_unread_info_writes(ops) for key, ops in parts.items()}


def drop_unread_info_writes(ops: Sequence[Operation]) -> list[Operation]:
    """Removes info writes of a value no read returned: if a linearization places one, no read
    sits between it and the next write, so leaving it out is also a linearization. This keeps
    runs with many timed-out writes from an exponential search over their subsets."""
    read_values = {freeze(op.output) for op in ops if op.f == "read"}
    return [
        op
        for op in ops
        if op.f != "write" or op.outcome != "info" or freeze(op.input) in read_values
    ]


@dataclass
class _Events:
    """Call and return events sorted by time, as a doubly linked list with a head sentinel."""

    next_: list[int]
    prev: list[int]
    op: list[int]
    is_call: list[bool]
    match: list[int]


def _sorted_events(ops: Sequence[Operation]) -> list[tuple[float, int, int]]:
    """(time, kind, op) with calls (kind 0) before returns on equal times, as Porcupine does:
    equal timestamps are treated as overlapping, the permissive reading."""
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        if op.return_ns < op.call_ns:
            raise ValueError(f"operation {op.id} returns before it is called")
        events.append((op.call_ns, 0, i))
        events.append((op.return_ns, 1, i))
    return sorted(events)


def _build_events(ops: Sequence[Operation]) -> _Events:
    order = _sorted_events(ops)
    size = len(order) + 1
    events = _Events(
        next_=[*range(1, size), NIL],
        prev=[NIL, *range(0, size - 1)],
        op=[NIL] + [i for _, _, i in order],
        is_call=[False] + [kind == 0 for _, kind, _ in order],
        match=[NIL] * size,
    )
    call_node: dict[int, int] = {}
    for node in range(1, size):
        if events.is_call[node]:
            call_node[events.op[node]] = node
        else:
            events.match[call_node[events.op[node]]] = node
    return events


def _lift(ev: _Events, call: int) -> None:
    """Removes a call event and its return event from the list."""
    ev.next_[ev.prev[call]] = ev.next_[call]
    ev.prev[ev.next_[call]] = ev.prev[call]
    ret = ev.match[call]
    ev.next_[ev.prev[ret]] = ev.next_[ret]
    if ev.next_[ret] != NIL:
        ev.prev[ev.next_[ret]] = ev.prev[ret]


def _unlift(ev: _Events, call: int) -> None:
    """Puts back what `_lift` removed, in reverse order."""
    ret = ev.match[call]
    ev.next_[ev.prev[ret]] = ret
    if ev.next_[ret] != NIL:
        ev.prev[ev.next_[ret]] = ret
    ev.next_[ev.prev[call]] = call
    ev.prev[ev.next_[call]] = call


class _Search:
    """Depth-first search for a linearization of one key, with an explicit stack."""

    def __init__(
        self, ops: Sequence[Operation], model: Model, deadline_s: float, max_cache_entries: int
    ) -> None:
        self.events = _build_events(ops)
        self.inputs = [ModelInput(op.f, freeze(op.input)) for op in ops]
        self.outputs = [freeze(op.output) if op.outcome == "ok" else UNKNOWN for op in ops]
        self.model = model
        self.deadline_s = deadline_s
        self.max_cache_entries = max_cache_entries
        self.state: Any = model.init()
        self.linearized = 0
        self.stack: list[tuple[int, Any]] = []
        self.cache: set[tuple[int, Any]] = set()
        self.best_ops: list[int] = []
        self.best_state: Any = self.state

    def run(self) -> Verdict:
        ev = self.events
        node = ev.next_[HEAD]
        steps = 0
        while ev.next_[HEAD] != NIL:
            steps += 1
            if steps % CLOCK_EVERY_STEPS == 0 and self._out_of_budget():
                return "unknown"
            if ev.is_call[node]:
                node = self._try_linearize(node)
                continue
            self._note_best()
            if not self.stack:
                return "invalid"
            node = self._backtrack()
        return "valid"

    def _out_of_budget(self) -> bool:
        return time.monotonic() >= self.deadline_s or len(self.cache) >= self.max_cache_entries

    def _try_linearize(self, call: int) -> int:
        """Linearizes the op of `call` next if the model accepts it and the resulting
        (set, state) is new; returns the event to look at next."""
        i = self.events.op[call]
        accepted, new_state = self.model.step(self.state, self.inputs[i], self.outputs[i])
        if not accepted:
            return self.events.next_[call]
        linearized = self.linearized | (1 << i)
        memo = (linearized, new_state)
        if memo in self.cache:
            return self.events.next_[call]
        self.cache.add(memo)
        self.stack.append((call, self.state))
        self.state, self.linearized = new_state, linearized
        _lift(self.events, call)
        return self.events.next_[HEAD]

    def _backtrack(self) -> int:
        """Undoes the last linearized op and returns the event after its call."""
        call, self.state = self.stack.pop()
        self.linearized &= ~(1 << self.events.op[call])
        _unlift(self.events, call)
        return self.events.next_[call]

    def _note_best(self) -> None:
        """Remembers the longest dead-end prefix; copied only when a longer one appears."""
        if len(self.stack) > len(self.best_ops):
            self.best_ops = [self.events.op[call] for call, _ in self.stack]
            self.best_state = self.state


def _stuck_ops(ops: Sequence[Operation], prefix: Sequence[int]) -> tuple[Operation, ...]:
    """Ops outside the prefix that real time allows next: called before any of them returned."""
    in_prefix = set(prefix)
    remaining = [op for i, op in enumerate(ops) if i not in in_prefix]
    first_return_ns = min(op.return_ns for op in remaining)
    return tuple(op for op in remaining if op.call_ns <= first_return_ns)


def _explain(key: Any, ops: Sequence[Operation], search: _Search) -> Explanation:
    return Explanation(
        key=key,
        prefix=tuple(ops[i] for i in search.best_ops),
        state_after_prefix=search.best_state,
        stuck=_stuck_ops(ops, search.best_ops),
    )


def check_key(
    key: Any,
    ops: Sequence[Operation],
    model: Model,
    deadline_s: float,
    max_cache_entries: int = MAX_CACHE_ENTRIES_DEFAULT,
) -> tuple[Verdict, Explanation | None]:
    """Checks one independent sub-history against `model` until the monotonic deadline."""
    happened = [op for op in ops if op.outcome != "fail"]  # fail: certainly did not happen
    search = _Search(happened, model, deadline_s, max_cache_entries)
    verdict = search.run()
    if verdict == "invalid":
        return verdict, _explain(key, happened, search)
    return verdict, None


def check(
    history: Sequence[Operation],
    model: Model,
    time_budget_s: float,
    max_cache_entries: int = MAX_CACHE_ENTRIES_DEFAULT,
) -> CheckResult:
    """Checks a paired history key by key; stops at the first invalid key.

    Never runs much past `time_budget_s`: keys not decided by then are reported as unknown.
    """
    started_s = time.monotonic()
    deadline_s = started_s + time_budget_s
    parts = model.partition(history)
    unknown_keys: list[Any] = []
    for checked, (key, ops) in enumerate(parts.items(), start=1):
        verdict, explanation = check_key(key, ops, model, deadline_s, max_cache_entries)
        if verdict == "invalid":
            elapsed_s = time.monotonic() - started_s
            return CheckResult("invalid", len(parts), checked, elapsed_s, (), explanation)
        if verdict == "unknown":
            unknown_keys.append(key)
    final: Verdict = "unknown" if unknown_keys else "valid"
    elapsed_s = time.monotonic() - started_s
    return CheckResult(final, len(parts), len(parts), elapsed_s, tuple(unknown_keys))
