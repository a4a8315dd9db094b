"""The API's JSON parser: DRF's, with the nesting bounded before the body is parsed."""

from __future__ import annotations

import codecs
import json
import re

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils.json import strict_constant

MAX_JSON_DEPTH = 32

# Of a JSON text, only quotes and brackets (of one kind: the parser refuses mismatched ones anyway) tell its depth.
_OTHER_BYTES = bytes(sorted(set(range(256)) - set(b'"[]{}')))
_ONE_KIND = bytes.maketrans(b"{}", b"[]")
_STRING = re.compile(rb'"[^"]*"?')  # with the escaped quotes gone; `"?`: one left open runs to the end


def nested_deeper_than(data: bytes, limit: int) -> bool:
    """Whether the JSON text `data` (UTF-8) nests arrays and objects more than `limit` levels deep, found without
    recursion and in time linear in its length. A text with unbalanced brackets (which the parser refuses) counts
    as deeper when the parser could go more than twice `limit` levels into it before refusing it."""
    # Escaped backslashes, then escaped quotes, out (paired left to right, as the parser pairs them): each
    # quote left opens or closes a string. In UTF-8 these bytes are never part of another character.
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = data.translate(_ONE_KIND, _OTHER_BYTES)
    if marks.count(b"[") <= limit:  # most bodies: too few brackets to nest that deep, even counting quoted ones
        return False
    # Two adjacent quotes (an empty string, or nothing between two strings) go: no bracket changes sides, and
    # what is left has a bracket between any two quotes, so the strings go in as many steps as there are brackets.
    brackets = _STRING.sub(b"", marks.replace(b'""', b""))
    # Each pass takes away the innermost pairs, one level: a pass that still finds one after `limit` passes
    # proves a nesting of more than `limit` levels.
    for _ in range(limit + 1):
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            # No pair left: the rest (if any) is unbalanced. The parser stops at its first stray bracket,
            # after at most as many levels as are left open here, on top of pairs of at most `limit` levels.
            return shorter.count(b"[") > limit
        brackets = shorter
    return True


class BoundedJSONParser(JSONParser):
    """DRF's JSONParser, except that JSON nested deeper than MAX_JSON_DEPTH is a 400 (ParseError) before the
    parser runs: Python's json module recurses once per level, and a RecursionError would be a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        data = stream.read()
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        except LookupError:  # a codec that is no text encoding (charset=base64, zlib, rot13): Django takes it
            raise ParseError(f"JSON parse error - {encoding!r} is not a text encoding.") from None
        utf8 = data if codecs.lookup(encoding).name == "utf-8" else text.encode("utf-8", "surrogatepass")
        if nested_deeper_than(utf8, MAX_JSON_DEPTH):
            raise ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels.")
        try:
            return json.loads(text, parse_constant=strict_constant if self.strict else None)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        except RecursionError:  # cannot happen below MAX_JSON_DEPTH; a 400 all the same
            raise ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels.") from None
