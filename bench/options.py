"""The benchmark's options: sizes and durations, the --quick preset, and where results go.

Owns: parsing the command line into one frozen, validated `Options`. Must not: start anything.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"


@dataclasses.dataclass(frozen=True)
class Options:
    records: int = 20_000          # batched ingest, per target (leader, follower, chroma run, each bound store)
    dim: int = 384
    batch_size: int = 500
    clients: int = 16              # concurrent single-record upserters
    upsert_s: float = 20.0         # how long the upserters run, per target
    read_clients: int = 8          # concurrent readers (query or get)
    read_s: float = 8.0            # how long each read workload runs
    kills: int = 5                 # leader SIGKILLs
    catchup_records: int = 5_000   # records written while a follower is down
    seed: int = 42
    deadline_s: float = 1_800.0    # watchdog: the whole run, start-up and clean-up included
    quick: bool = False
    results_dir: Path = RESULTS_DIR
    work_dir: Path | None = None   # parent of the run's temp dir (servers' data and logs)
    keep_temp: bool = False
    only: str | None = None        # one workload alone (ONLY_WORKLOADS), for a quick look at one row


ONLY_WORKLOADS = ("upserts",)


QUICK = {"records": 1_000, "upsert_s": 3.0, "read_s": 2.0, "kills": 2, "catchup_records": 500,
         "deadline_s": 400.0}

SIZES = {
    "records": (int, "records of each batched ingest"),
    "dim": (int, "embedding dimension"),
    "batch_size": (int, "records per add in the batched ingests and the catch-up writes"),
    "clients": (int, "concurrent single-record upsert clients"),
    "upsert_s": (float, "seconds the upsert clients run, per target"),
    "read_clients": (int, "concurrent read clients, per read workload"),
    "read_s": (float, "seconds each read workload runs"),
    "kills": (int, "leader SIGKILLs (the killed node is restarted and rejoins between kills)"),
    "catchup_records": (int, "records written while one follower is down"),
    "deadline_s": (float, "watchdog: stop everything and fail after this long"),
}


def parse(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench", description=(
        "raftchroma against `chroma run` on this machine: ingest, physical bound, concurrent upserts, "
        "reads at each consistency, leader kill, catch-up, elections. Defaults in [brackets]; --quick "
        f"uses {', '.join(f'{k}={v:g}' for k, v in QUICK.items())} unless given explicitly."))
    p.add_argument("--quick", action="store_true", help="small sizes, short durations (the smoke test's mode)")
    for name, (kind, text) in SIZES.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                       help=f"{text} [{getattr(Options, name):g}]")
    p.add_argument("--seed", type=int, default=Options.seed, help="seed of every generated vector and id pick")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON and PNG go [bench/results]")
    p.add_argument("--work-dir", type=Path, default=None, help="parent of the run's temp dir [the system's temp dir]")
    p.add_argument("--keep-temp", action="store_true", help="keep the servers' data and logs after a successful run")
    p.add_argument("--only", choices=ONLY_WORKLOADS, default=None,
                   help="run only this workload (no bound, ingest, reads, kills or catch-up); its row is printed "
                        "and written as bench/results/<workload>-<stamp>.json, latest.json is left alone")
    args = p.parse_args(argv)
    chosen = {name: getattr(args, name) for name in SIZES if getattr(args, name) is not None}
    preset = QUICK if args.quick else {}
    options = Options(**(preset | chosen), seed=args.seed, quick=args.quick, results_dir=args.results_dir,
                      work_dir=args.work_dir, keep_temp=args.keep_temp, only=args.only)
    for name in SIZES:
        if getattr(options, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return options
