"""PolicyStore: the policy file's current PolicySet, read again on demand (SIGHUP) and when its content
changes, keeping the last good one when the new text is not valid.

Changes are found by the content's hash, read through the path each time: that follows a Kubernetes
ConfigMap's symlink swap (``..data`` pointing at a new directory), which an inotify watch on the file, or its
modification time, can miss. The swap is one reference assignment: a request that read ``current`` keeps
the PolicySet it read, whole, and the next one sees the new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from pathlib import Path

from tornado_rate_limiter.limiter.policies.loader import PolicyFileError, load_policy_file, parse_policies
from tornado_rate_limiter.limiter.policies.model import PolicySet

log = logging.getLogger("tornado_rate_limiter.policies")

RELOADED, UNCHANGED, FAILED = "ok", "unchanged", "error"
DEFAULT_CHECK_INTERVAL = 2.0  # seconds between content checks: a ConfigMap update lands within a minute anyway


class PolicyStore:
    """The PolicySet read from ``path``: ``current``. Raises PolicyFileError at construction when the file
    cannot be used (at start, the process should stop); later failures keep the last good set."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.current: PolicySet = load_policy_file(self.path)
        self.reloads: Counter[str] = Counter()  # by result: ok, unchanged, error
        self.last_error: str | None = None
        self._rejected: str | None = None  # the sha256 of the last content found invalid

    def reload(self, *, force: bool = False) -> str:
        """Read the file again: RELOADED (a new PolicySet is current), UNCHANGED (the content is the current
        one, or the invalid one already reported) or FAILED (unreadable or not valid: the current set
        stays, and the error is logged in one line). ``force`` (SIGHUP) reports an invalid content again."""
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            return self._failed(f"{self.path}: cannot be read: {exc.strerror or exc}", force)
        sha256 = hashlib.sha256(raw).hexdigest()
        if sha256 == self.current.sha256:
            self.last_error = None  # readable and current again: a later failure is news
            self.reloads[UNCHANGED] += 1
            return UNCHANGED
        if sha256 == self._rejected and not force:
            self.reloads[UNCHANGED] += 1
            return UNCHANGED
        try:
            policy_set = parse_policies(raw, str(self.path))
        except (PolicyFileError, ValueError) as exc:
            self._rejected = sha256
            return self._failed(str(exc), force=True)
        self.current, self.last_error, self._rejected = policy_set, None, None
        self.reloads[RELOADED] += 1
        log.info("policy file %s reloaded (sha256 %s)", self.path, policy_set.sha256[:12])
        return RELOADED

    def _failed(self, message: str, force: bool) -> str:
        """Log and count a failure, unless it is the one reported last (a missing file, checked every few
        seconds, is one failure until something changes)."""
        if message == self.last_error and not force:
            self.reloads[UNCHANGED] += 1
            return UNCHANGED
        log.error("%s; keeping the policies read before (sha256 %s)", message, self.current.sha256[:12])
        self.last_error = message
        self.reloads[FAILED] += 1
        return FAILED

    async def watch(self, interval: float = DEFAULT_CHECK_INTERVAL) -> None:
        """Check the content every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.reload()
            except Exception:  # a bug must not end the watch: reloads that silently stop are the worst kind
                log.exception("checking the policy file %s failed", self.path)

    @property
    def sha256(self) -> str:
        """The hash of the configuration in force."""
        return self.current.sha256


class FixedPolicies:
    """A PolicySet built in code, served as a PolicyStore serves a file's: ``current``, never reloaded."""

    def __init__(self, policy_set: PolicySet) -> None:
        self.current = policy_set
        self.reloads: Counter[str] = Counter()

    @property
    def sha256(self) -> str:
        return self.current.sha256
