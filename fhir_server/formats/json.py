"""FHIR JSON that keeps the client's numbers exactly as written.

FHIR decimals carry their precision (`1.50` is not `1.5`), so JSON numbers with a fraction or an
exponent are parsed into `decimal.Decimal` and written back from their original text.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

from fhir_server.engine.errors import bad_request


def parse_json(data: bytes | str) -> Any:
    try:
        return json.loads(data, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"The body is not valid JSON: {exc}") from exc


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a valid JSON number")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    if hasattr(value, "to_decimal"):          # bson.Decimal128 read back from the database
        return orjson.Fragment(str(value.to_decimal()).encode())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dump_json(value: Any, pretty: bool = False) -> bytes:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(value, default=_default, option=option)
