"""One-line messages for pydantic validation errors (pure).

A user who misspells a key or writes `PublishedPort = "eighty"` gets one line naming the key path
(in the file's own spelling), what was expected and what was found, plus the closest known key for an
unknown one. Never a pydantic dump, never a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

KnownKeys = Callable[[tuple[str | int, ...]], Sequence[str]]
"""Given the location of an unknown key's parent, the keys that are allowed there."""

_EXPECTED = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
    "bytes_type": "expected bytes",
}


def model_keys(model: type[BaseModel]) -> tuple[str, ...]:
    """The keys a model accepts, in the file's spelling (aliases, including alias choices)."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        if field.validation_alias is not None and hasattr(field.validation_alias, "choices"):
            keys.extend(str(c) for c in field.validation_alias.choices)
        else:
            keys.append(field.alias or name)
    return tuple(keys)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def describe_error(err: ErrorDetails, known_keys: KnownKeys) -> str:
    """`key.path: what was expected, got what` for one pydantic error."""
    loc = tuple(err["loc"])
    where = _path(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        parent, key = loc[:-1], str(loc[-1])
        close = difflib.get_close_matches(key, list(known_keys(parent)), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{where}: unknown key{hint}"
    if kind == "missing":
        return f"{where}: required key is missing"
    if kind == "value_error":
        # Our own validators phrase the whole expectation; pydantic only prefixes it.
        message = str(err["msg"]).removeprefix("Value error, ")
        # Whole-document checks name their own keys.
        return f"{where}: {message}" if where else message
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{where}: expected one of {expected}, got {_shown(err['input'])}"
    where = where or "(top level)"
    expected = _EXPECTED.get(kind)
    if expected is None:
        return f"{where}: {err['msg']}"
    return f"{where}: {expected}, got {_shown(err['input'])}"


def first_error_line(exc: ValidationError, known_keys: KnownKeys) -> str:
    """The first error only: one line a user can act on; fixing it reveals the next."""
    return describe_error(exc.errors(include_url=False)[0], known_keys)
