"""CNI specification versions: what our plugins speak, which version to hand a delegate, and
converting results between the 0.3/0.4 and 1.x formats.

A 1.0.0 result and a 1.1.0 result have the same shape (1.1 only adds optional fields), so
between them a conversion relabels `cniVersion`. 0.3.x/0.4.0 results carry `ips[].version`,
which 1.0.0 dropped.
"""

from __future__ import annotations

from tke.internal.cni import jsonio as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

# What cni-switch and tke-ipamc accept from a runtime.
SUPPORTED = ("1.0.0", "1.1.0")
# Versions we can talk to a delegate in (results are converted to and from these).
DELEGATE_CAPABLE = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")


def parse(version: str) -> tuple[int, int, int]:
    """'1.0.0' -> (1, 0, 0); ValueError for anything else."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a CNI version: {version!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def at_least(version: str, minimum: str) -> bool:
    return parse(version) >= parse(minimum)


def for_delegate(requested: str, delegate_supports: Iterable[str]) -> str | None:
    """The newest version both sides can use and no newer than `requested`; None when there is
    none (the delegate speaks nothing we can convert to)."""
    ceiling = parse(requested)
    common = [v for v in delegate_supports if v in DELEGATE_CAPABLE and parse(v) <= ceiling]
    return max(common, key=parse) if common else None


def result_error(result: Any) -> str:
    """Why `result` is no result convert_result can read ('' when it is one): an object whose
    cniVersion, if any, is a version and whose ips, if any, are a list."""
    if not isinstance(result, dict):
        return "not a JSON object"
    version = result.get("cniVersion")
    if version is not None:
        try:
            parse(version if isinstance(version, str) else "")
        except ValueError:
            return f"cniVersion {version!r} is not a version"
    if not isinstance(result.get("ips", []), list):
        return "ips is not a list"
    return ""


def convert_result(result: dict[str, Any], to: str) -> dict[str, Any]:
    """`result` (any version we can convert: see result_error) in version `to`."""
    out: dict[str, Any] = json.loads(json.dumps(result))  # a deep copy: results are JSON
    source = str(out.get("cniVersion", to))
    if parse(source)[0] >= 1 and parse(to)[0] < 1:
        for ip in out.get("ips", []):
            if isinstance(ip, dict) and "address" in ip:
                ip["version"] = "6" if ":" in str(ip["address"]) else "4"
    elif parse(source)[0] < 1 and parse(to)[0] >= 1:
        for ip in out.get("ips", []):
            if isinstance(ip, dict):
                ip.pop("version", None)
    out["cniVersion"] = to
    return out
