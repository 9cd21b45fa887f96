"""JSON for the plugins through the C accelerator `_json` directly.

Importing `json` costs more than the rest of a plugin's imports together: json.decoder and
json.scanner import `re` (and with it enum and functools) only for their pure-Python
fallbacks, which CPython never uses. This module parses and prints the same JSON with the same
C scanner and encoder, and falls back to `json` where `_json` is missing.

Whatever the input, `loads` returns a value or raises DecodeError (a ValueError): text that is
not UTF-8 or not JSON, and documents nested deeper than limits.MAX_JSON_DEPTH (which would
otherwise exhaust the scanner's recursion, or a recursive encoder's later on). Unlike json,
`NaN`, `Infinity` and `-Infinity` are refused (JSON has no such values: json accepts them, and
`dumps` would hand them on to delegate plugins, which refuse them), and so is a number too
large for a double (`1e999`, which json reads as infinity and `dumps` would print as
`Infinity`): every value `loads` returns is one `dumps` prints as JSON.
"""

from __future__ import annotations

from tke.internal.cni.limits import MAX_JSON_DEPTH

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

try:
    import _json
except ImportError:  # pragma: no cover - every CPython has it
    _json = None  # type: ignore[assignment]

WHITESPACE = " \t\n\r"
INFINITY = float("inf")


class DecodeError(ValueError):
    pass


def _refuse_constant(name: str) -> float:
    raise DecodeError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (INFINITY, -INFINITY):
        raise DecodeError(f"the number {text[:32]} is too large")
    return value


class _Context:
    """What _json's scanner reads from json.JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = staticmethod(_finite_float)
    parse_int = int
    memo: dict[str, str] = {}
    parse_constant = staticmethod(_refuse_constant)


def loads(data: str | bytes) -> Any:
    """Like json.loads; DecodeError (a ValueError) on invalid or too deeply nested input."""
    try:
        value = _decode(data.decode("utf-8") if isinstance(data, bytes | bytearray) else data)
    except RecursionError:
        raise DecodeError(f"nested more than {MAX_JSON_DEPTH} levels deep") from None
    if not _within_depth(value, MAX_JSON_DEPTH):
        raise DecodeError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _decode(text: str) -> Any:
    if _json is None:
        return _stdlib_loads(text)
    start = len(text) - len(text.lstrip(WHITESPACE))
    context: Any = _Context()
    try:
        value, end = _json.make_scanner(context)(text, start)
    except StopIteration as stop:
        raise DecodeError(f"expecting a value at offset {stop.value}") from None
    except (RecursionError, DecodeError):
        raise
    except Exception:
        # The C scanner builds its error from json.decoder, which is not imported: let json
        # itself say what is wrong (invalid input only; never on the success path).
        return _stdlib_loads(text)
    rest = text[end:].lstrip(WHITESPACE)
    if rest:
        raise DecodeError(f"extra data at offset {len(text) - len(rest)}")
    return value


def _within_depth(value: Any, limit: int) -> bool:
    """Whether no array or object in `value` lies more than `limit` levels deep (iteratively:
    a recursive walk would hit the recursion limit this guards against)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def _stdlib_loads(text: str) -> Any:
    import json

    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except ValueError as err:
        raise DecodeError(str(err)) from None


def _default(obj: Any) -> Any:
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dumps(obj: Any) -> str:
    """Like json.dumps(obj, separators=(",", ":")): compact, ASCII, no NaN checks skipped."""
    if _json is None:
        import json

        return json.dumps(obj, separators=(",", ":"))
    encoder = _json.make_encoder({}, _default, _json.encode_basestring_ascii, None, ":", ",", False, False, True)
    return "".join(encoder(obj, 0))
