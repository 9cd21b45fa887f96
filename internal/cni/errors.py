"""CNI errors as the specification defines them: a code, a message and optional details,
printed as the error JSON on stdout with a non-zero exit status.

Codes 0-99 are the specification's; 100 and up are ours (documented in docs/cni.md).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
NOT_AVAILABLE_LIMITED_CONNECTIVITY = 51

# Ours: a delegated plugin failed without a readable CNI error; an unexpected internal failure;
# the pool has no free address; ipamd refused otherwise (an address owned by someone else, a
# node the pool does not serve, a denied call); ADD for an attachment that already exists
# (ADD twice without DEL).
DELEGATE_FAILED = 100
INTERNAL = 101
POOL_EXHAUSTED = 102
IPAM_REFUSED = 103
ATTACHMENT_EXISTS = 104


class CNIError(Exception):
    """A failure the plugin reports to its caller as CNI error JSON."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    @classmethod
    def from_json(cls, data: Any, fallback: str) -> CNIError:
        """The error a child plugin printed; `fallback` when it printed no CNI error."""
        if isinstance(data, dict) and isinstance(data.get("code"), int):
            return cls(data["code"], str(data.get("msg", "")), str(data.get("details", "")))
        return cls(DELEGATE_FAILED, fallback)

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg
