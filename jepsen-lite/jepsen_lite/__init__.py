"""jepsen-lite's checkers: pure functions from recorded histories to verdicts.

This package owns the history format and the checkers. It must not start servers, inject
faults or import raftchroma: the harness records, these modules judge.
"""

from jepsen_lite.collections_checker import CollectionsModel, check_collections
from jepsen_lite.convergence import check_convergence
from jepsen_lite.history import (
    Op,
    Operation,
    dump_history,
    is_nemesis,
    load_history,
    nemesis_ops,
    pair_ops,
)
from jepsen_lite.linearizability import (
    UNKNOWN,
    CheckResult,
    Explanation,
    Model,
    ModelInput,
    RegisterModel,
    check,
)
from jepsen_lite.set_checker import check_set

__all__ = [
    "UNKNOWN",
    "CheckResult",
    "CollectionsModel",
    "Explanation",
    "Model",
    "ModelInput",
    "Op",
    "Operation",
    "RegisterModel",
    "check",
    "check_collections",
    "check_convergence",
    "check_set",
    "dump_history",
    "is_nemesis",
    "load_history",
    "nemesis_ops",
    "pair_ops",
]
