"""Request paths as logs may show them: the access log's lines and Django's request warnings ("Not Found: ...")
name the path, and a path can hold an address (DELETE /api/v1/suppressions/<address>, a list filtered by
?to=<address>). Logs carry ids, never addresses, so a logged path loses its query string and every segment that
holds an @."""

from __future__ import annotations

import logging
from urllib.parse import unquote

from gunicorn.glogging import Logger

HIDDEN = "<hidden>"


# Percent-encodings a segment is decoded through: %2540 is an @ encoded twice (the view sees %40).
MOST_ENCODINGS = 3


def loggable_path(target: str) -> str:
    """A request target (a path, or a referer's URL) without its query string and without any segment that holds
    an address, percent-encoded or not."""
    path, query = target.split("?", 1) if "?" in target else (target, None)
    segments = [HIDDEN if _may_hold_an_address(segment) else segment for segment in path.split("/")]
    return "/".join(segments) + ("?" + HIDDEN if query is not None else "")


def _may_hold_an_address(segment: str) -> bool:
    for _ in range(MOST_ENCODINGS):
        if "@" in segment:
            return True
        decoded = unquote(segment)
        if decoded == segment:
            return False
        segment = decoded
    return "@" in segment or "%" in segment  # encoded more often than that: not shown


class AccessLog(Logger):
    """gunicorn's logger (`logger_class` in gunicorn.conf.py), its access lines with loggable paths. The user of
    an `Authorization: Basic` header is not shown either: a client may put its API key there."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        method, _, rest = atoms["r"].partition(" ")
        target, _, protocol = rest.rpartition(" ")
        atoms["r"] = f"{method} {loggable_path(target)} {protocol}"
        atoms["U"] = loggable_path(atoms["U"] or "")
        atoms["q"] = HIDDEN if atoms["q"] else ""
        atoms["f"] = loggable_path(atoms["f"])
        atoms["u"] = "-"
        return atoms


class LoggablePaths(logging.Filter):
    """For Django's request loggers: each path among a record's arguments ("Not Found: %s") made loggable."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                loggable_path(arg) if isinstance(arg, str) and arg.startswith("/") else arg for arg in record.args
            )
        return True
