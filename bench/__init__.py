"""raftchroma's benchmark: `python -m bench` (from a source checkout) runs every workload against a
real `chroma run` and a real 3-node raftchroma cluster on this machine, in one run.

Modules: options (the sizes, and --quick), measure (timing one or many clients), servers (the
processes under test, and their Raft status), bound (the physical bound: three embedded stores
at once), workloads (ingest, upserts, reads), faults (leader kill, follower catch-up), report
(rows, targets, table, JSON, chart). `chroma_client_suite.py` and `snapshot_restart.py` beside
them are separate scripts.
"""
