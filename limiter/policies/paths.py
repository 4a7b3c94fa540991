"""The one form of a request's path that routes are matched on, however the client wrote it, so that a
route cannot be slipped by spelling its path another way (``/api/%73earch``, ``//api/./search``, ...).

``normalize_path`` is RFC 3986's syntax-based normalization (section 6.2.2) of the path, plus what servers
in front of applications commonly drop: the query and fragment are cut, the absolute form is reduced to its
path, percent-encoded unreserved characters are decoded (``%73`` is ``s``; other encodings keep their
meaning and are written in upper case, ``%2f`` as ``%2F``), bytes that may not stand in a path are
percent-encoded, path parameters (``;x=1``, which Tomcat and Jetty drop) are cut from every segment,
repeated slashes are collapsed and dot segments removed (section 5.2.4). A malformed percent-encoding
raises MalformedPath: such a request is refused, never passed unmatched.

An encoded slash or backslash (``%2F``, ``%5C``) keeps its meaning here, but many applications decode it
into a separator (WSGI's PATH_INFO does): ``with_separators_decoded`` gives that reading, so the route
table can refuse a path whose two readings are different routes (``AmbiguousPath``).
"""

from __future__ import annotations

import re

# What may stand in a normalized path as it is: unreserved characters, sub-delims but ";" (cut as a path
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
    """A path whose encoded slash makes it another route when an application decodes it; safe to show."""


_ENCODED_SEPARATOR = re.compile(r"%2F|%5C")


def normalize_path(target: str) -> str:
    """The path of request target ``target`` (origin or absolute form, with or without a query) in the form
    routes match; MalformedPath for a ``%`` not followed by two hex digits."""
    if target.startswith("/") and _NEEDS_WORK.search(target) is None:
        return target
    absolute = _ABSOLUTE_FORM.match(target)
    if absolute is not None:
        target = target[absolute.end() :]
    path = target.split("?", 1)[0].split("#", 1)[0]
    path = _KEPT.sub(_encode_character, path)
    if "%" in path:
        path = _decode_unreserved(path)
    return _remove_dot_segments(path)


def with_separators_decoded(path: str) -> str | None:
    """Normalized ``path`` as an application that decodes ``%2F`` and ``%5C`` into separators routes it,
    normalized again; None when it has neither."""
    if "%2F" not in path and "%5C" not in path:
        return None
    return normalize_path(_ENCODED_SEPARATOR.sub("/", path))


def _encode_character(match: re.Match[str]) -> str:
    """A character that may not stand in a path as its percent-encoded bytes (a request line's bytes come
    as Latin-1 characters, so each is one byte; any other character as its UTF-8)."""
    character = match.group()
    data = character.encode("latin-1") if ord(character) < 256 else character.encode("utf-8")
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
