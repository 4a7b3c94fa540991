"""The Lua scripts the Redis backend runs, shipped as package data.

Read through importlib.resources so they load the same from a source tree and an installed wheel.
"""

from __future__ import annotations

from importlib.resources import files


def read_script(name: str) -> str:
    """Return the text of the script ``name`` (for example ``"token_bucket.lua"``)."""
    return files(__name__).joinpath(name).read_text(encoding="utf-8")
