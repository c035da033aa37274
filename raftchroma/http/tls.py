"""The client API's TLS: the server's `ssl.SSLContext` from `[tls]` in cluster.toml.

Owns: protocol floor (TLS 1.2), the node's certificate and key, and, when `client_ca_file` is
set, requiring a client certificate signed by that CA. Must not: read anything but the files
`[tls]` names, or be used for the Raft port (that is replication's).
"""

from __future__ import annotations

import ssl

from raftchroma.config import TlsConfig


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file is not None:
        context.load_verify_locations(cafile=str(tls.client_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
    return context
