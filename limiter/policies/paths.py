"""The one form of a request's path that routes are matched on, however the client wrote it, so that a
route cannot be slipped by spelling its path another way (``/api/%73earch``, ``//api/./search``, ...).

``normalize_path`` is RFC 3986's syntax-based normalization (section 6.2.2) of the path, plus what servers
in front of applications commonly drop: the query and fragment are cut, the absolute form is reduced to its
path, percent-encoded unreserved characters are decoded (``%73`` is ``s``; other encodings keep their
meaning and are written in upper case, ``%2f`` as ``%2F``), bytes that may not stand in a path are
percent-encoded, path parameters (``;x=1``, which Tomcat and Jetty drop) are cut from every segment,
repeated slashes are collapsed and dot segments removed (section 5.2.4). A malformed percent-encoding
raises MalformedPath: such a request is refused, never passed unmatched.

Servers differ in what they do with a path's structure: Tornado, Express and Werkzeug route on it as
written (``/api/search/..`` is under ``/api/search/``), Tomcat and Traefik as normalized here, and WSGI
decodes an encoded slash or backslash (``%2F``, ``%5C``) into a separator, which normalization keeps as a
character. ``other_readings`` gives those readings, so the route table can refuse a path that is another
route under one of them (``AmbiguousPath``): whichever reading the application takes, it is charged right.
"""

from __future__ import annotations

import re

# What may stand in a path as it is: unreserved characters, sub-delims (";" too: cut later as a path
# parameter), ":", "@", "/" and the "%" of an encoding.
_KEPT = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,=:@/%;]")
# A path that is already normalized matches none of these, and is returned as it is (most requests).
_NEEDS_WORK = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,=:@/]|//|/\.\.?(?:/|$)")
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*")
_ENCODED = re.compile(r"%(..)", re.DOTALL)
_HEX = frozenset("0123456789abcdefABCDEF")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class MalformedPath(ValueError):
    """A request target whose percent-encoding is malformed; the message says where, safe to show."""


class AmbiguousPath(MalformedPath):
    """A path that is another route as some server reads it (its dot segments, repeated slashes or
    parameters kept, its encoded slashes decoded): refused like a malformed one. The message is safe to show."""


_ENCODED_SEPARATOR = re.compile(r"%2F|%5C")


def normalize_path(target: str) -> str:
    """The path of request target ``target`` (origin or absolute form, with or without a query) in the form
    routes match; MalformedPath for a ``%`` not followed by two hex digits."""
    if target.startswith("/") and _NEEDS_WORK.search(target) is None:
        return target
    return _remove_dot_segments(_as_written(target))


def other_readings(target: str, normalized: str) -> set[str]:
    """The paths other than ``normalized`` (``normalize_path(target)``) that servers may route ``target`` on:
    as written (dot segments, repeated slashes and parameters kept), and each with its encoded slashes
    and backslashes decoded into separators. Empty for a target already normalized (most requests)."""
    if target == normalized and "%2F" not in normalized and "%5C" not in normalized:
        return set()
    as_written = _as_written(target)
    readings = {as_written, _ENCODED_SEPARATOR.sub("/", as_written)}
    readings.add(_remove_dot_segments(_ENCODED_SEPARATOR.sub("/", normalized)))
    readings.discard(normalized)
    return readings


def _as_written(target: str) -> str:
    """The path of ``target`` with its encodings normalized and its structure as written: the absolute form
    reduced to its path, the query and fragment cut, unreserved characters decoded, others encoded."""
    absolute = _ABSOLUTE_FORM.match(target)
    if absolute is not None:
        target = target[absolute.end() :] or "/"
    path = target.split("?", 1)[0].split("#", 1)[0]
    path = _KEPT.sub(_encode_character, path)
    return _decode_unreserved(path) if "%" in path else path


def _encode_character(match: re.Match[str]) -> str:
    """A character that may not stand in a path as its percent-encoded bytes (a request line's bytes come
    as Latin-1 characters, so each is one byte; any other character as its UTF-8)."""
    character = match.group()
    data = character.encode("latin-1") if ord(character) < 256 else character.encode("utf-8", "surrogatepass")
    return "".join(f"%{byte:02X}" for byte in data)


def _decode_unreserved(path: str) -> str:
    position = path.find("%")
    while position >= 0:
        digits = path[position + 1 : position + 3]
        if len(digits) < 2 or not _HEX.issuperset(digits):
            message = f"malformed percent-encoding {path[position : position + 3]!r} at {position} of the path"
            raise MalformedPath(message)
        position = path.find("%", position + 3)
    return _ENCODED.sub(_decoded, path)


def _decoded(match: re.Match[str]) -> str:
    character = chr(int(match.group(1), 16))
    return character if character in _UNRESERVED else "%" + match.group(1).upper()


def _remove_dot_segments(path: str) -> str:
    """Segments without their parameters, empty ones (repeated slashes) and dot segments removed; a path
    ending in a slash or a dot segment keeps its trailing slash, as RFC 3986's algorithm does."""
    kept: list[str] = []
    segments = path.split("/")
    for segment in segments:
        name = segment.split(";", 1)[0]
        if name in ("", "."):
            continue
        if name == "..":
            if kept:
                kept.pop()
            continue
        kept.append(name)
    last = segments[-1].split(";", 1)[0]
    trailing = "/" if kept and last in ("", ".", "..") else ""
    return "/" + "/".join(kept) + trailing
