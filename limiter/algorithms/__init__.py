"""Rate-limiting algorithms beside the token bucket (``limiter/bucket.py``): each module holds one pure
reference model, the contract its backends are to follow bit for bit.

``fixed_window`` and ``sliding_window`` (a sliding-window counter) count cost per window of ``window``
seconds aligned to the Unix epoch. Not wired into the backends yet: the Lua and local steps, and the seam
that lets every part of the limiter work with any algorithm, come next (tracker issue 12).
"""
