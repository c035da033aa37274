"""The Chroma v2 HTTP API over a raftchroma node; the only package that imports aiohttp."""

from raftchroma.http.app import build_app, run_server

__all__ = ["build_app", "run_server"]
