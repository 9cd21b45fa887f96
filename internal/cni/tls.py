"""TLS over TCP to tke-ipamd: the server's certificate verified against the configured CA for
the configured name (default: the address's host), a client certificate for mutual TLS when one
is configured, HTTP/2 agreed through ALPN, the handshake within the call's deadline.

The context is ssl.create_default_context(cafile=...): certificate and host name verification
on, TLS 1.2 at least, Python's ciphers. Only a plugin configured for TLS imports this module
(ssl and socket cost a TLS call ~5 ms of start-up more than the unix socket path's `_socket`;
the public API is worth it where certificates are checked).

Failures: `h2.Unreachable` for anything that may work later (an untrusted server, a client
certificate the server wants or refuses, a closed connection), each with a message an operator
can act on; ValueError when the configuration itself cannot be used (unreadable or mismatched
files), which the caller reports as a configuration error.
"""

from __future__ import annotations

import socket
import ssl

from tke.internal.cni.h2 import Unreachable, remaining
from tke.internal.cni.transport import dial_tcp, split_address


def _reason(err: OSError) -> str:
    """An error's words without OpenSSL's source location."""
    return str(getattr(err, "reason", "") or err.strerror or err)


class TLSStream:
    """A TLS connection as h2 uses it. TLS failures become `Unreachable` with their reason; a
    server that closes the connection before its first byte of HTTP/2 (as grpc servers do
    when they refuse a client certificate, without a TLS alert) is reported as that."""

    def __init__(self, tls: ssl.SSLSocket, client: TLSClient) -> None:
        self.tls = tls
        self.client = client
        self.answered = False

    def _failed(self, err: OSError) -> Unreachable:
        if isinstance(err, ssl.SSLError) and not isinstance(err, ssl.SSLEOFError):
            return Unreachable(self.client.explain(err))
        if not self.answered:
            return Unreachable(self.client.closed_early())
        return Unreachable(f"TLS: {_reason(err)}")

    def sendall(self, data: bytes) -> None:
        while data:
            try:
                written = self.tls.send(data)
            except TimeoutError:
                raise
            except OSError as err:
                raise self._failed(err) from None
            data = data[written:]

    def recv(self, size: int) -> bytes:
        try:
            data = self.tls.recv(size)
        except TimeoutError:
            raise
        except ssl.SSLZeroReturnError:
            data = b""
        except OSError as err:
            raise self._failed(err) from None
        if not data and not self.answered:
            raise Unreachable(self.client.closed_early())
        self.answered = True
        return data

    def settimeout(self, timeout: float | None) -> None:
        self.tls.settimeout(timeout)

    def close(self) -> None:
        self.tls.close()


class TLSClient:
    """A TLS client configuration, loaded once: the CA that must have signed ipamd's
    certificate, the name it must carry, and an optional client certificate and key."""

    def __init__(self, ca_file: str, cert_file: str = "", key_file: str = "", server_name: str = "") -> None:
        if key_file and not cert_file:
            raise ValueError("tls.keyFile needs tls.certFile")
        if not server_name.isascii():
            raise ValueError(f"tls.serverName {server_name!r}: give the ASCII (punycode) form")
        self.ca_file = ca_file
        self.cert_file = cert_file
        self.server_name = server_name
        try:
            self.context = ssl.create_default_context(cafile=ca_file)
        except OSError as err:
            raise ValueError(f"tls.caFile {ca_file}: {_reason(err)}") from None
        if cert_file:
            try:
                self.context.load_cert_chain(cert_file, key_file or None)
            except OSError as err:
                raise ValueError(f"tls.certFile {cert_file}, keyFile {key_file or cert_file}: {_reason(err)}") from None
        self.context.set_alpn_protocols(["h2"])

    def dial(self, address: str, deadline: float) -> TLSStream:
        """A TLS connection to `address`, verified against the CA for `server_name` (default:
        the address's host), speaking HTTP/2."""
        name = self.server_name or split_address(address)[0]
        sock = socket.socket(fileno=dial_tcp(address, deadline).detach())
        try:
            tls = self.context.wrap_socket(sock, server_hostname=name, do_handshake_on_connect=False)
            tls.settimeout(remaining(deadline))
            tls.do_handshake()
            if tls.selected_alpn_protocol() != "h2":
                raise Unreachable(f"{address} did not agree to HTTP/2 over TLS (ALPN), so it is not a gRPC server")
        except TimeoutError:
            sock.close()
            raise Unreachable(f"{address}: deadline exceeded during the TLS handshake") from None
        except ssl.SSLError as err:
            sock.close()
            raise Unreachable(self.explain(err, name)) from None
        except OSError as err:
            sock.close()
            raise Unreachable(f"{address}: TLS handshake: {err.strerror or err}") from None
        except BaseException:
            sock.close()
            raise
        return TLSStream(tls, self)

    def closed_early(self) -> str:
        if not self.cert_file:
            return (
                "TLS: ipamd closed the connection after the handshake: it requires a client certificate, "
                "most likely (set ipamd.tls.certFile and tls.keyFile)"
            )
        return (
            f"TLS: ipamd closed the connection after the handshake: it does not accept the client certificate "
            f"{self.cert_file}, most likely (not signed by a CA it trusts for clients, expired, or not for "
            "client authentication)"
        )

    def explain(self, err: ssl.SSLError, name: str = "") -> str:
        """What a TLS failure means for the operator."""
        reason = str(getattr(err, "reason", "") or "")
        if isinstance(err, ssl.SSLCertVerificationError):
            detail = getattr(err, "verify_message", "") or reason
            return f"TLS: ipamd's certificate is not trusted for {name!r} by {self.ca_file}: {detail}"
        if not self.cert_file and ("CERTIFICATE_REQUIRED" in reason or "HANDSHAKE_FAILURE" in reason):
            return f"TLS: ipamd requires a client certificate ({reason}): set ipamd.tls.certFile and tls.keyFile"
        if self.cert_file and ("CERTIFICATE" in reason or "UNKNOWN_CA" in reason):
            return f"TLS: ipamd rejected the client certificate {self.cert_file} ({reason})"
        return f"TLS: {reason or err}"
