"""JSON for the shim's hot path through the C accelerator ``_json``, without importing ``json``.

``import json`` costs ~5 ms (it loads ``re`` and ``enum``) in a process that lives ~7 ms. This module drives
the same C scanner and encoder that ``json`` itself uses, so the values read and the text written are
exactly ``json``'s. Everything the fast path does not cover goes to ``json`` itself: malformed input (so
error messages stay ``json``'s, position included), UTF-16/32 or BOM-prefixed bytes, and interpreters
without ``_json``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

try:
    import _json
except ImportError:  # an interpreter without the accelerator: json's pure-Python path below
    _json = None  # type: ignore[assignment]

# JSON's insignificant whitespace (RFC 8259), what json.decoder's WHITESPACE pattern matches.
_WS = " \t\n\r"
# First bytes json.detect_encoding reads as a BOM (UTF-8, UTF-16, UTF-32 LE/BE).
_BOM_STARTS = (b"\xef", b"\xfe", b"\xff")


class _ScanContext:
    """The attributes ``_json.make_scanner`` reads, with json.JSONDecoder's defaults."""

    __slots__ = (
        "array_hook", "object_hook", "object_pairs_hook", "parse_constant", "parse_float", "parse_int",
        "strict",
    )  # fmt: skip

    def __init__(self) -> None:
        self.strict = True
        self.object_hook = None
        self.object_pairs_hook = None
        # 3.15 reads an array hook too; older versions ignore the extra attribute.
        self.array_hook = None
        self.parse_float = float
        self.parse_int = int
        self.parse_constant = {
            "-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan"),
        }.__getitem__  # fmt: skip


def _make_scanner() -> Callable[[str, int], tuple[object, int]] | None:
    try:
        return _json.make_scanner(_ScanContext())  # type: ignore[arg-type]
    except (AttributeError, TypeError):  # no _json, or a context this version does not accept
        return None


_scan = _make_scanner()


def _text(data: bytes | str) -> str | None:
    """``data`` as json.loads would decode it, or None when only json itself should (BOM, UTF-16/32)."""
    if isinstance(data, str):
        return None if data.startswith("\ufeff") else data
    if data[:1] in _BOM_STARTS or b"\x00" in data[:4]:
        return None
    return data.decode("utf-8", "surrogatepass")


def _slow_loads(data: bytes | str) -> object:
    import json

    return json.loads(data)


def loads(data: bytes | str) -> object:
    """``json.loads(data)``: the same value, or the same exception (``ValueError``, ``RecursionError``)."""
    if _scan is None or not isinstance(data, (bytes, str)):
        return _slow_loads(data)
    try:
        text = _text(data)
        if text is None:
            return _slow_loads(data)
        start = len(text) - len(text.lstrip(_WS))
        value, end = _scan(text, start)
    except (StopIteration, ValueError, SystemError):
        # Not JSON (or not UTF-8): json raises the same error, with its message and position. The scanner
        # builds its errors from json.decoder only when json is loaded, else it fails with SystemError.
        return _slow_loads(data)
    if text[end:].strip(_WS):
        return _slow_loads(data)  # "Extra data", from json
    return value


def _not_serializable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(
    value: object,
    *,
    ensure_ascii: bool = True,
    separators: tuple[str, str] = (", ", ": "),
    default: Callable[[object], object] | None = None,
) -> str:
    """``json.dumps(value, ensure_ascii=..., separators=..., default=...)``, byte for byte."""
    item_separator, key_separator = separators
    try:
        quote = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
        encoder = _json.make_encoder(
            {}, default or _not_serializable, quote, None, key_separator, item_separator, False, False, True
        )
    except (AttributeError, TypeError):  # no _json, or an encoder this version builds differently
        import json

        return json.dumps(value, ensure_ascii=ensure_ascii, separators=separators, default=default)
    return "".join(encoder(value, 0))
