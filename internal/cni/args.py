"""CNI_ARGS: `KEY=VALUE;KEY=VALUE`, as runtimes send it (kubelet adds IgnoreUnknown=1,
K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_INFRA_CONTAINER_ID, K8S_POD_UID)."""

from __future__ import annotations

from tke.internal.cni.errors import INVALID_ENVIRONMENT, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


def parse_args(raw: str) -> dict[str, str]:
    """The pairs of CNI_ARGS; a later key wins. A pair without '=' is an error (code 4)."""
    out: dict[str, str] = {}
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CNIError(INVALID_ENVIRONMENT, "invalid CNI_ARGS", f"pair {pair!r} is not KEY=VALUE")
        out[key] = value
    return out


def format_args(pairs: Mapping[str, str]) -> str:
    return ";".join(f"{k}={v}" for k, v in pairs.items())


def without(raw: str, keys: Iterable[str]) -> str:
    """CNI_ARGS with `keys` removed (the rest unchanged, in order)."""
    drop = set(keys)
    return ";".join(p for p in raw.split(";") if p and p.partition("=")[0] not in drop)


def ignore_unknown(pairs: Mapping[str, str]) -> bool:
    return pairs.get("IgnoreUnknown", "").lower() in ("1", "true")
