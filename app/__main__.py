"""`python -m tornado_rate_limiter.app`: the same command line as `python -m tornado_rate_limiter`."""

from __future__ import annotations

import sys

from tornado_rate_limiter.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
