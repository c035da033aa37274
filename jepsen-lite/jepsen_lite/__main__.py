"""The jepsen-lite command line: `run` a test against a fresh local cluster, or `check` a stored run.

Owns: argument parsing, SIGTERM handling (so that a stopped runner still kills its nodes) and
exit codes: 0 valid, 1 invalid, 2 unknown or harness/usage error. `check` also redraws the report.
`entry` is the installed `jepsen-lite` command; `python -m jepsen_lite` runs the same.
Runs go under `--out` (default: the XDG state directory, `~/.local/state/raftchroma/jepsen-lite`).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from jepsen_lite.matrix import LEDGER_NAME, main_table, parse_seeds, run_campaign
from jepsen_lite.matrix import NEMESES as NEMESES_ORDER
from jepsen_lite.matrix import WORKLOADS as WORKLOADS_ORDER
from jepsen_lite.nemesis import KINDS
from jepsen_lite.runner import EXIT_UNKNOWN, RunOptions, check_run, default_out_dir, run
from jepsen_lite.workloads import WORKLOADS


def _parser() -> argparse.ArgumentParser:
    out = default_out_dir()
    parser = argparse.ArgumentParser(
        prog="jepsen-lite",
        description="Fault injection with checked histories against a local raftchroma cluster. "
                    f"Runs are written under --out (default {out}). "
                    "Exit codes: 0 valid, 1 invalid, 2 unknown or harness / usage error.")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run one test against a fresh local cluster")
    r.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    r.add_argument("--nemesis", default="", help=f"comma-separated, of: {','.join(KINDS)}")
    r.add_argument("--time-limit", type=float, default=60.0, help="seconds of workload")
    r.add_argument("--concurrency", type=int, default=8)
    r.add_argument("--rate", type=float, default=50.0, help="operations per second, all clients together")
    r.add_argument("--seed", type=int, default=42)
    r.add_argument("--read-consistency", choices=("linearizable", "stale"), default="linearizable")
    r.add_argument("--nodes", type=int, default=3)
    r.add_argument("--unsafe-local-reads", action="store_true", help=argparse.SUPPRESS)
    r.add_argument("--out", "--store", dest="store", type=Path, default=out, metavar="DIR",
                   help=f"parent of the run directory (default {out})")
    c = sub.add_parser("check", help="re-check a stored run directory")
    c.add_argument("run_dir", type=Path)
    m = sub.add_parser("matrix", help="run every workload x nemesis for each seed, one run after another")
    m.add_argument("--seeds", required=True, help="e.g. 101,102 or 103-110")
    m.add_argument("--time-limit", type=float, default=60.0)
    m.add_argument("--concurrency", type=int, default=6)
    m.add_argument("--rate", type=float, default=40.0)
    m.add_argument("--workloads", default=",".join(WORKLOADS_ORDER))
    m.add_argument("--nemeses", default=",".join(NEMESES_ORDER))
    m.add_argument("--out", "--store", dest="store", type=Path, default=out / "matrix", metavar="DIR",
                   help=f"runs and the ledger (default {out / 'matrix'})")
    t = sub.add_parser("table", help="print the markdown table of a matrix ledger")
    t.add_argument("ledger", type=Path, nargs="?", default=out / "matrix" / LEDGER_NAME)
    return parser


def _usage_error(message: str) -> None:
    print(f"jepsen-lite: {message}", file=sys.stderr)
    sys.exit(EXIT_UNKNOWN)


def _nemeses(spec: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in spec.split(",") if k.strip())
    for kind in kinds:
        if kind not in KINDS:
            _usage_error(f"unknown nemesis {kind!r} (known: {', '.join(KINDS)})")
    return kinds


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds through LocalCluster.__exit__, which kills the nodes


def _summary(run_dir: Path) -> str:
    results = json.loads((run_dir / "results.json").read_text())
    counts = results["counts"]
    elections = results.get("elections")
    seen = "" if not elections else (f"\nelections: {elections['elections']}, outside fault windows: "
                                     f"{elections['elections_outside_windows']} (leader changes outside: "
                                     f"{elections['leader_changes_outside_windows']})")
    return (f"{run_dir}\nverdict: {results['verdict']}  {results['verdicts']}\n"
            f"ops: {counts['operations']} (ok {counts['ok']}, fail {counts['fail']}, info {counts['info']})" + seen)


def _matrix(args: argparse.Namespace) -> int:
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        _usage_error(f"--seeds: {exc}")
    if args.concurrency < 1 or args.rate <= 0 or args.time_limit <= 0:
        _usage_error("--concurrency, --rate and --time-limit must be positive")
    workloads = [w for w in args.workloads.split(",") if w]
    nemeses = list(_nemeses(args.nemeses))
    for workload in workloads:
        if workload not in WORKLOADS:
            _usage_error(f"unknown workload {workload!r}")
    signal.signal(signal.SIGTERM, _on_sigterm)
    return run_campaign(seeds, args.time_limit, args.concurrency, args.rate, args.store, workloads, nemeses)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        code = check_run(args.run_dir)
        print(_summary(args.run_dir))
        return code
    if args.command == "table":
        return main_table(args.ledger)
    if args.command == "matrix":
        return _matrix(args)
    if args.concurrency < 1 or args.rate <= 0 or args.time_limit <= 0 or args.nodes < 1:
        _usage_error("--concurrency, --rate, --time-limit and --nodes must be positive")
    opts = RunOptions(workload=args.workload, nemesis=_nemeses(args.nemesis), time_limit_s=args.time_limit,
                      concurrency=args.concurrency, rate=args.rate, seed=args.seed,
                      read_consistency=args.read_consistency, nodes=args.nodes,
                      unsafe_local_reads=args.unsafe_local_reads, store=args.store)
    signal.signal(signal.SIGTERM, _on_sigterm)
    code, run_dir = run(opts)
    print(_summary(run_dir))
    return code


def entry() -> None:
    """The `jepsen-lite` console script."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(EXIT_UNKNOWN)
    except Exception as exc:  # a harness error must not read as exit 1 (invalid)
        print(f"jepsen-lite: harness error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(EXIT_UNKNOWN)


if __name__ == "__main__":
    entry()
