"""Input hygiene: what a context, an outcome or a configuration string may hold, checked in one place.

Whatever :meth:`Router.decide <banditroute.decide.router.Router.decide>` accepts is logged:
the context as JSON text, in a journal line and a Parquet string column, read back by
``scan_table``, compaction, replay, the DSJSON export and ``ope`` (Polars' JSON reader). So a
value is accepted only if every one of them can take it back, and within bounds, so that one
request cannot make a reader recurse, allocate or widen without end:

* every string (a key or a value) is valid Unicode: it encodes as UTF-8, i.e. holds no lone
  surrogate (``"\\ud800"``; Python strings and JSON ``\\u`` escapes can, UTF-8 cannot);
* :data:`MAX_STRING_CHARS`, :data:`MAX_DEPTH`, :data:`MAX_KEYS`, :data:`INT_MIN`/:data:`INT_MAX`
  and :data:`MAX_CONTEXT_CHARS` below.

Keys that are not strings are written as JSON writes them (``1`` -> ``"1"``), as before.
NaN, infinity and values JSON has no form for are the JSON encoder's to refuse (``request.py``).

The library raises :class:`~banditroute.errors.InvalidRequestError` (contexts),
``InvalidOutcomeError`` (outcomes) or ``ConfigError`` naming the field and the value, or its
kind and size when the value is too large to print; the service turns them into a 422.

>>> check_context({"tenant": "acme", "tags": ["a", "b\\ud800"]})
Traceback (most recent call last):
...
banditroute.errors.InvalidRequestError: context.tags[1] must be valid Unicode text (a lone surrogate '\\ud800' at index 1), got 'b\\ud800'
>>> check_context({"n": 10**30})
Traceback (most recent call last):
...
banditroute.errors.InvalidRequestError: context.n must be an integer in [-2**63, 2**63 - 1] (int64), got 1000000000000000000000000000000
>>> check_text("policy_version", "v\\udc80")
Traceback (most recent call last):
...
banditroute.errors.ConfigError: policy_version must be valid Unicode text (a lone surrogate '\\udc80' at index 1), got 'v\\udc80'
"""

from __future__ import annotations

import sys

from ..errors import ConfigError, InvalidRequestError

__all__ = ["MAX_DEPTH", "MAX_STRING_CHARS", "MAX_KEYS", "INT_MIN", "INT_MAX", "MAX_CONTEXT_CHARS", "plain",
           "check_context", "check_text", "text_problem", "invalid"]

#: Containers (mappings, lists) nest at most this many levels below the context. Python's
#: ``json`` (replay, the DSJSON export, the service's request parser) recurses once per level
#: within a stack of ~1,000 frames; routing contexts are flat or a few levels deep.
MAX_DEPTH = 32
#: Characters (code points) of one string, key or value: 64 Ki, the service's default body
#: limit. A longer value is a payload (a prompt, a document), not a routing feature, and every
#: decision row (and, for a learning policy, every pending decision) carries its context.
MAX_STRING_CHARS = 65_536
#: Keys of one mapping. ``ope`` decodes logged contexts into one column per key and
#: scikit-learn's ``DictVectorizer`` (a ``TaskClassifier``) makes one feature per key.
MAX_KEYS = 1_024
#: Integers are int64: Parquet and Arrow have no wider integer, Polars' JSON reader turns a
#: column holding a wider one into strings (for every row), and Python cannot even print an
#: integer of more than 4,300 digits (``sys.get_int_max_str_digits``).
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1
#: Characters of the whole context as JSON text (1 Mi). The service's body limit
#: (``ServiceConfig.max_body_bytes``, 64 KiB by default) is tighter; this bounds the library.
MAX_CONTEXT_CHARS = 1 << 20

_LEAVES = frozenset((str, float, bool, type(None)))
_SHOWN = 80  # values whose repr is longer are described by kind and size instead
# JSON text this short holds no string over MAX_STRING_CHARS, and no mapping of more than
# MAX_KEYS keys (a key and its value take at least 5 characters: "":0,)
_PLAIN_CHARS = 5 * MAX_KEYS


def plain(context: dict, text: str) -> bool:
    """Whether a context whose JSON ``text`` was made is within every limit by a cheap test:
    flat, short and of clean text (the common case, on the hot path: a look at each top-level
    value, no walk); otherwise :func:`check_context` walks it."""
    if len(text) > _PLAIN_CHARS or not (text.isascii() or _utf8(text)):
        return False
    for value in context.values():  # flat: scalars only, integers within int64
        if type(value) is str:
            continue
        if type(value) is int:
            if value > INT_MAX or value < INT_MIN:
                return False
        elif type(value) not in _LEAVES:
            return False
    return True


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_context(context, text: str | None = None) -> None:
    """Raise :class:`InvalidRequestError` naming the first value of ``context`` beyond a limit
    (``text``: its JSON text, when it could be made)."""
    if text is not None and len(text) > MAX_CONTEXT_CHARS:
        raise InvalidRequestError("context", problem=f"must be at most {MAX_CONTEXT_CHARS:,} characters as JSON, "
                                  f"got {len(text):,}")
    _check(context, "context", 0)


def _check(value, path: str, depth: int) -> None:
    if isinstance(value, str):
        problem = text_problem(value)
        if problem:
            raise invalid(InvalidRequestError, path, value, problem)
    elif isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise invalid(InvalidRequestError, path, value, "must be an integer in [-2**63, 2**63 - 1] (int64)")
    elif isinstance(value, (dict, list, tuple)):
        if depth > MAX_DEPTH:  # also ends a mapping that contains itself
            raise InvalidRequestError(path, problem=f"is nested too deeply: containers nest at most {MAX_DEPTH} "
                                      f"levels below the context, got {_kind(value)} at level {depth}")
        if isinstance(value, dict):
            if len(value) > MAX_KEYS:
                raise invalid(InvalidRequestError, path, value, f"must have at most {MAX_KEYS:,} keys")
            for key, item in value.items():
                if isinstance(key, str):
                    problem = text_problem(key)
                    if problem:
                        raise invalid(InvalidRequestError, path, key, f"keys {problem}")
                _check(item, f"{path}.{_label(key)}", depth + 1)
        else:
            for i, item in enumerate(value):
                _check(item, f"{path}[{i}]", depth + 1)
    # anything else (NaN is a float) is the JSON encoder's to accept or refuse


def text_problem(text: str, max_chars: int = MAX_STRING_CHARS) -> str | None:
    """What keeps ``text`` out of the log (too long, a lone surrogate), or None."""
    if len(text) > max_chars:
        return f"must be at most {max_chars:,} characters"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"must be valid Unicode text (a lone surrogate {text[exc.start]!r} at index {exc.start})"
    return None


def check_text(field: str, value, *, error: type = ConfigError, max_chars: int = MAX_STRING_CHARS) -> str:
    """Return ``value`` after checking it is a string the log can hold (``error`` otherwise)."""
    if not isinstance(value, str):
        raise invalid(error, field, value, "must be a string")
    problem = text_problem(value, max_chars)
    if problem:
        raise invalid(error, field, value, problem)
    return value


def invalid(error: type, field: str, value, problem: str):
    """``error`` naming ``field`` and ``value``, or the value's kind and size when it is too
    large to print (a 70,000-character string, an integer of 5,000 digits)."""
    if isinstance(value, str):
        shown = len(value) <= _SHOWN
    elif isinstance(value, int):
        shown = value.bit_length() <= 3 * _SHOWN
    elif isinstance(value, (dict, list, tuple)):
        shown = len(value) <= 8 and len(_safe_repr(value)) <= _SHOWN
    else:
        shown = len(_safe_repr(value)) <= 4 * _SHOWN
    if shown:
        return error(field, value, problem)
    return error(field, problem=f"{problem}, got {_kind(value)}")


def _safe_repr(value) -> str:
    try:
        return repr(value)
    except (ValueError, RecursionError):  # an integer too long to print, a value nested too deeply
        return "?" * (4 * _SHOWN + 1)


def _kind(value) -> str:
    if isinstance(value, str):
        return f"a string of {len(value):,} characters"
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        try:
            return f"an integer of {len(str(abs(value))):,} digits"
        except ValueError:  # beyond what Python prints
            return f"an integer of more than {sys.get_int_max_str_digits():,} digits"
    if isinstance(value, dict):
        return f"a mapping of {len(value):,} key{'s' * (len(value) != 1)}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value):,} item{'s' * (len(value) != 1)}"
    return f"a {type(value).__name__}"


def _label(key) -> str:
    """A key as part of a field name (long keys are cut)."""
    if not isinstance(key, str):
        key = "<integer>" if isinstance(key, int) and key.bit_length() > 3 * _SHOWN else repr(key)
    return key if len(key) <= 64 else key[:61] + "..."
