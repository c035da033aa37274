"""jepsen-lite: fault injection against a local raftchroma cluster, with checked histories.

The checker modules (history, linearizability, set_checker, collections_checker, convergence)
are pure functions from recorded histories to verdicts: they must not start servers, inject
faults or import raftchroma. The harness modules (cluster, client, workloads, nemesis, recorder,
runner, stats) record, and `report` draws; they are not re-exported here, so importing the
checkers starts nothing (and loads no matplotlib).
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
