"""jepsen-lite: fault injection against a local raftchroma cluster, with checked histories.

The checker modules (history, linearizability, set_checker, collections_checker, hostile_checker,
batch_checker, elections_checker, convergence) are pure functions from recorded histories to
verdicts: they must not start servers, inject faults or import raftchroma. The harness modules
(cluster, client, workloads, hostile, batch, nemesis, recorder, status_monitor, runner, stats)
record, and `report` draws; they are not re-exported here, so importing the checkers starts
nothing (and loads no matplotlib).
"""

from jepsen_lite.batch_checker import BatchModel, check_batches
from jepsen_lite.collections_checker import CollectionsModel, check_collections
from jepsen_lite.convergence import check_convergence
from jepsen_lite.elections_checker import check_elections
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
    "BatchModel",
    "CheckResult",
    "CollectionsModel",
    "Explanation",
    "Model",
    "ModelInput",
    "Op",
    "Operation",
    "RegisterModel",
    "check",
    "check_batches",
    "check_collections",
    "check_convergence",
    "check_elections",
    "check_set",
    "dump_history",
    "is_nemesis",
    "load_history",
    "nemesis_ops",
    "pair_ops",
]
