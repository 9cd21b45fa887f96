"""Client channels to the platform's own services and to external ones: plaintext, TLS or
mutual TLS, to "host:port" or "unix:/path"."""

from __future__ import annotations

from pathlib import Path

import grpc


def channel(address: str, *, ca_file: str = "", cert_file: str = "", key_file: str = "") -> grpc.aio.Channel:
    """A channel with TLS when `ca_file` is set (and a client certificate when cert and key are)."""
    options = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000)]
    if not ca_file:
        return grpc.aio.insecure_channel(address, options=options)
    creds = grpc.ssl_channel_credentials(
        root_certificates=Path(ca_file).read_bytes(),
        private_key=Path(key_file).read_bytes() if key_file else None,
        certificate_chain=Path(cert_file).read_bytes() if cert_file else None,
    )
    return grpc.aio.secure_channel(address, creds, options=options)
