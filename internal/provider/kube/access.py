"""How to reach a cluster's Kubernetes API: the server URL, the CA that signed its certificate,
and who we are (a client certificate, a bearer token, or an exec credential plugin), from a
kubeconfig or given one by one.

Invariants:
- The server's certificate is always verified: `insecure-skip-tls-verify` is refused, and
  without a CA the system's trust store is used.
- Secrets never appear in a repr, a log line or an error message.
- Exec plugins run commands: a kubeconfig may use one only when its caller allows it
  (`allow_exec`), which the platform does only for kubeconfigs an operator configured. A
  plugin runs with a bounded time and output, non-interactively, and may return a token
  (client.authentication.k8s.io v1 or v1beta1, with expirationTimestamp honoured); a plugin
  that returns a client certificate is refused.
- Every problem is a PermanentError with a message that says what to fix, except a plugin that
  fails when run (its credentials service may be down), which is a TemporaryError.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import json
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from tke.internal.provider.addresses import AddressPolicy, server_key
from tke.internal.provider.credentials import Credential
from tke.internal.provider.errors import PermanentError, TemporaryError

EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
EXEC_TIMEOUT = 30.0
EXEC_MAX_OUTPUT = 1 << 20
TOKEN_FILE_REREAD = 60.0
# Where a pod finds its service account's credentials, and the API server's address.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class ExecPlugin:
    """A kubeconfig user's `exec` section: a command that prints an ExecCredential."""

    api_version: str
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    # Pass the cluster's server and CA to the plugin in KUBERNETES_EXEC_INFO.
    provide_cluster_info: bool = False


@dataclass(frozen=True)
class ClusterAccess:
    """Everything needed to call one cluster's API. Empty fields are not used."""

    server: str
    ca_pem: bytes = field(default=b"", repr=False)
    client_cert_pem: bytes = field(default=b"", repr=False)
    client_key_pem: bytes = field(default=b"", repr=False)
    token: str = field(default="", repr=False)
    # A file holding the bearer token, read again every TOKEN_FILE_REREAD seconds and when the
    # server refuses it: a service account's projected token, which the kubelet rotates.
    token_file: str = ""
    exec_plugin: ExecPlugin | None = None
    # The name to check the server's certificate against, when not the URL's host.
    tls_server_name: str = ""
    # Where connections to the server may go (a server a tenant's object names): every
    # connection to an address this policy admitted, from the same lookup (kube.transport).
    # None: the operator's own servers (a meta cluster, a cluster's in-cluster address), dialed
    # as the URL says.
    addresses: AddressPolicy | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        url = urlsplit(self.server)
        if url.scheme != "https" or not url.hostname:
            raise PermanentError(f"API server URL {self.server!r} must be https://HOST[:PORT]")
        if bool(self.client_cert_pem) != bool(self.client_key_pem):
            raise PermanentError("a client certificate needs its key, and a key its certificate")

    @property
    def identity(self) -> str:
        """How we authenticate, for messages (never the secret itself)."""
        if self.client_cert_pem:
            return "client certificate"
        if self.token or self.token_file:
            return "bearer token"
        if self.exec_plugin:
            return f"exec plugin {self.exec_plugin.command}"
        return "no credentials"

    def ssl_context(self) -> ssl.SSLContext:
        """TLS for this server: its CA (or the system's), and the client certificate if any."""
        try:
            context = ssl.create_default_context(cadata=self.ca_pem.decode() if self.ca_pem else None)
        except (ssl.SSLError, ValueError, UnicodeDecodeError) as err:
            raise PermanentError(f"the CA certificate of {self.server} does not load: {err}") from None
        if self.client_cert_pem:
            _load_client_certificate(context, self.client_cert_pem, self.client_key_pem)
        return context


def _load_client_certificate(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """ssl loads certificates only from files: write them to a private temporary directory
    and remove them at once (the context keeps them in memory)."""
    with tempfile.TemporaryDirectory(prefix="tke-kube-") as directory:
        cert_file, key_file = Path(directory, "client.crt"), Path(directory, "client.key")
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        cert_file.write_bytes(cert)
        try:
            context.load_cert_chain(str(cert_file), str(key_file))
        except ssl.SSLError as err:
            raise PermanentError(f"the client certificate or key does not load: {err.reason or err}") from None


def _data(section: Mapping[str, Any], key: str, base_dir: Path | None, what: str) -> bytes:
    """`KEY-data` (base64) or `KEY` (a file, relative to the kubeconfig's directory)."""
    if section.get(f"{key}-data"):
        try:
            return base64.b64decode(str(section[f"{key}-data"]), validate=True)
        except ValueError:
            raise PermanentError(f"kubeconfig: {what} {key}-data is not base64") from None
    if section.get(key):
        return _read(str(section[key]), base_dir, what)
    return b""


def _read(name: str, base_dir: Path | None, what: str) -> bytes:
    path = Path(name)
    if not path.is_absolute():
        if base_dir is None:
            raise PermanentError(
                f"kubeconfig: {what} names the relative file {name!r} but the kubeconfig has no directory"
            )
        path = base_dir / path
    try:
        return path.read_bytes()
    except OSError as err:
        raise PermanentError(f"kubeconfig: {what}: cannot read {path}: {err.strerror}") from None


def _named(doc: Mapping[str, Any], section: str, name: str) -> Mapping[str, Any]:
    for entry in doc.get(section) or []:
        if isinstance(entry, Mapping) and entry.get("name") == name:
            inner = entry.get(section[:-1])
            return inner if isinstance(inner, Mapping) else {}
    raise PermanentError(f"kubeconfig: {section[:-1]} {name!r} is not defined")


def from_kubeconfig(
    text: str, *, context: str = "", base_dir: Path | None = None, allow_exec: bool = False
) -> ClusterAccess:
    """The access a kubeconfig describes, for its current context or `context`."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise PermanentError(f"kubeconfig is not valid YAML{where}") from None
    if not isinstance(doc, Mapping) or doc.get("kind", "Config") != "Config":
        raise PermanentError("kubeconfig is not a Config document")
    name = context or str(doc.get("current-context") or "")
    if not name:
        raise PermanentError("kubeconfig has no current-context and none was given")
    ctx = _named(doc, "contexts", name)
    cluster = _named(doc, "clusters", str(ctx.get("cluster", "")))
    user = _named(doc, "users", str(ctx.get("user", ""))) if ctx.get("user") else {}
    if cluster.get("insecure-skip-tls-verify"):
        raise PermanentError("kubeconfig: insecure-skip-tls-verify is not accepted; give the cluster's CA instead")
    if cluster.get("proxy-url"):
        raise PermanentError("kubeconfig: proxy-url is not supported")
    if user.get("auth-provider"):
        raise PermanentError("kubeconfig: auth-provider plugins are not supported (use an exec plugin)")
    if user.get("username") or user.get("password"):
        raise PermanentError("kubeconfig: basic authentication is not supported by Kubernetes")
    token = str(user.get("token") or "")
    if not token and user.get("tokenFile"):
        token = _read(str(user["tokenFile"]), base_dir, "user tokenFile").decode().strip()
    plugin = _exec_plugin(user.get("exec"), allow_exec) if user.get("exec") else None
    return ClusterAccess(
        server=str(cluster.get("server", "")),
        ca_pem=_data(cluster, "certificate-authority", base_dir, "cluster"),
        client_cert_pem=_data(user, "client-certificate", base_dir, "user"),
        client_key_pem=_data(user, "client-key", base_dir, "user"),
        token=token,
        exec_plugin=plugin,
        tls_server_name=str(cluster.get("tls-server-name") or ""),
    )


def from_credential(credential: Credential, server: str = "") -> ClusterAccess:
    """The access a configured credential gives: its kubeconfig (an operator's file, so exec
    plugins may run), or a bearer token and CA, for `server` when given (a tenant's URL: an
    imported cluster's), else the kubeconfig's own server.

    A credential is pinned to its servers (`servers` of its configuration, else its
    kubeconfig's server): a `server` that is not one of them is a PermanentError raised before
    anything is sent anywhere, so a tenant cannot send the operator's token or client
    certificate to a URL of its choosing. A credential with no known server goes nowhere."""
    access = None
    if credential.kubeconfig:
        base = Path(credential.kubeconfig_dir) if credential.kubeconfig_dir else None
        try:
            access = from_kubeconfig(
                credential.kubeconfig, context=credential.kubeconfig_context, base_dir=base, allow_exec=True
            )
        except PermanentError as err:
            raise PermanentError(f"credential {credential.name!r}: {err}") from None
        if not server:
            return access
    if not server:
        raise PermanentError(f"credential {credential.name!r} is not a kubeconfig: the API server URL is needed")
    pinned = credential.servers or ((access.server,) if access is not None else ())
    check_pinned(credential.name, pinned, server)
    if access is not None:
        return dataclasses.replace(access, server=server)
    return ClusterAccess(server, ca_pem=credential.ca_cert, token=credential.token)


def check_pinned(name: str, pinned: tuple[str, ...], server: str) -> None:
    """PermanentError unless `server` is one of `pinned` (compared as server_key spells them)."""
    if not pinned:
        raise PermanentError(
            f"credential {name!r} names no API server, so it is sent to none: the operator pins it with "
            f"`servers = [...]` in its [credentials] entry"
        )
    wanted = server_key(server)
    if wanted is None or wanted not in {server_key(p) for p in pinned}:
        raise PermanentError(
            f"API server URL {server!r} is not a server of credential {name!r} ({', '.join(pinned)}): "
            "a credential is sent only to the servers it is configured for"
        )


def in_cluster(env: Mapping[str, str] | None = None, directory: str = SERVICE_ACCOUNT_DIR) -> ClusterAccess:
    """The access of a pod to its own cluster: the API server Kubernetes names in the pod's
    environment (KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT), its service account's CA
    and token (re-read as the kubelet rotates it)."""
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise PermanentError("not in a pod: KUBERNETES_SERVICE_HOST is not set (configure a kubeconfig instead)")
    ca = _read(os.path.join(directory, "ca.crt"), None, "service account")
    token_file = os.path.join(directory, "token")
    _read(token_file, None, "service account")  # fail now, with the path, rather than at the first call
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return ClusterAccess(server, ca_pem=ca, token_file=token_file)


def _exec_plugin(section: Any, allowed: bool) -> ExecPlugin:
    if not allowed:
        raise PermanentError("kubeconfig: exec credential plugins are not allowed for this kubeconfig")
    if not isinstance(section, Mapping) or not section.get("command"):
        raise PermanentError("kubeconfig: exec needs a command")
    api_version = str(section.get("apiVersion", ""))
    if api_version not in EXEC_API_VERSIONS:
        raise PermanentError(
            f"kubeconfig: exec apiVersion {api_version!r} is not one of {', '.join(EXEC_API_VERSIONS)}"
        )
    if section.get("interactiveMode") == "Always":
        raise PermanentError("kubeconfig: exec plugins that always need a terminal cannot run in the platform")
    env = tuple((str(e.get("name", "")), str(e.get("value", ""))) for e in section.get("env") or [])
    return ExecPlugin(
        api_version=api_version,
        command=str(section["command"]),
        args=tuple(str(a) for a in section.get("args") or []),
        env=env,
        provide_cluster_info=bool(section.get("provideClusterInfo")),
    )


@dataclass
class _Cached:
    token: str
    expires: datetime.datetime | None


class BearerSource:
    """The Authorization header of every request: a static token, a token file (re-read now
    and then, and when the server refuses it), or a token an exec plugin prints (kept until it
    expires or the server refuses it)."""

    def __init__(self, access: ClusterAccess) -> None:
        self.access = access
        self._cached: _Cached | None = None
        self._lock = asyncio.Lock()

    @property
    def refreshable(self) -> bool:
        return self.access.exec_plugin is not None or bool(self.access.token_file)

    async def header(self, *, refresh: bool = False) -> str | None:
        if self.access.token:
            return f"Bearer {self.access.token}"
        if self.access.token_file:
            return f"Bearer {self._from_file(refresh)}"
        if self.access.exec_plugin is None:
            return None
        async with self._lock:
            now = datetime.datetime.now(datetime.UTC)
            c = self._cached
            if refresh or c is None or (c.expires is not None and c.expires <= now + datetime.timedelta(seconds=10)):
                self._cached = c = await self._run(self.access.exec_plugin)
            return f"Bearer {c.token}"

    def _from_file(self, refresh: bool) -> str:
        now = datetime.datetime.now(datetime.UTC)
        c = self._cached
        if refresh or c is None or c.expires is None or c.expires <= now:
            try:
                token = Path(self.access.token_file).read_text().strip()
            except OSError as err:
                raise TemporaryError(f"cannot read the token file {self.access.token_file}: {err.strerror}") from None
            self._cached = c = _Cached(token, now + datetime.timedelta(seconds=TOKEN_FILE_REREAD))
        return c.token

    async def _run(self, plugin: ExecPlugin) -> _Cached:
        info: dict[str, Any] = {
            "apiVersion": plugin.api_version,
            "kind": "ExecCredential",
            "spec": {"interactive": False},
        }
        if plugin.provide_cluster_info:
            cluster: dict[str, Any] = {"server": self.access.server}
            if self.access.ca_pem:
                cluster["certificate-authority-data"] = base64.b64encode(self.access.ca_pem).decode()
            info["spec"]["cluster"] = cluster
        env = {**os.environ, **dict(plugin.env), "KUBERNETES_EXEC_INFO": json.dumps(info)}
        try:
            proc = await asyncio.create_subprocess_exec(
                plugin.command,
                *plugin.args,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as err:
            raise PermanentError(f"exec plugin {plugin.command!r} cannot run: {err.strerror}") from None
        try:
            async with asyncio.timeout(EXEC_TIMEOUT):
                out, err_out = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise TemporaryError(f"exec plugin {plugin.command!r} did not finish within {EXEC_TIMEOUT:.0f}s") from None
        if proc.returncode != 0:
            first = err_out.decode(errors="replace").strip().splitlines()[:1]
            detail = f": {first[0][:200]}" if first else ""
            raise TemporaryError(f"exec plugin {plugin.command!r} failed with exit code {proc.returncode}{detail}")
        if len(out) > EXEC_MAX_OUTPUT:
            raise PermanentError(f"exec plugin {plugin.command!r} printed more than {EXEC_MAX_OUTPUT} bytes")
        return _credential(out, plugin)


def _credential(out: bytes, plugin: ExecPlugin) -> _Cached:
    try:
        doc = json.loads(out)
        status = doc["status"]
    except (ValueError, KeyError, TypeError):
        raise PermanentError(f"exec plugin {plugin.command!r} did not print an ExecCredential") from None
    if doc.get("apiVersion") != plugin.api_version or doc.get("kind") != "ExecCredential":
        raise PermanentError(f"exec plugin {plugin.command!r} printed {doc.get('apiVersion')} {doc.get('kind')}, "
                             f"not {plugin.api_version} ExecCredential")  # fmt: skip
    if status.get("clientCertificateData") and not status.get("token"):
        raise PermanentError(f"exec plugin {plugin.command!r} returned a client certificate: only tokens are supported")
    token = status.get("token")
    if not isinstance(token, str) or not token:
        raise PermanentError(f"exec plugin {plugin.command!r} returned no token")
    expires = None
    if status.get("expirationTimestamp"):
        try:
            expires = datetime.datetime.fromisoformat(str(status["expirationTimestamp"]).replace("Z", "+00:00"))
        except ValueError:
            raise PermanentError(f"exec plugin {plugin.command!r}: expirationTimestamp is not RFC 3339") from None
    return _Cached(token, expires)
