"""PolicyStore: the policy file read again on demand and on a change of content, keeping the last good
PolicySet when the new text is not valid, and following a Kubernetes ConfigMap's symlink swap."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from tests.test_policy_file import EXAMPLE
from tornado_rate_limiter.limiter import TokenBucket
from tornado_rate_limiter.limiter.policies import PolicyFileError
from tornado_rate_limiter.limiter.policies.store import FAILED, RELOADED, UNCHANGED, PolicyStore

CHANGED = EXAMPLE.replace("capacity = 20", "capacity = 40")
BROKEN = EXAMPLE.replace("refill_rate = 5 ", "refil_rate = 5 ")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    file = tmp_path / "limits.toml"
    file.write_text(EXAMPLE)
    return file


def burst_capacity(store: PolicyStore) -> float:
    policy = store.current.policies["burst"]
    assert isinstance(policy, TokenBucket)
    return policy.capacity


def test_a_new_content_replaces_the_policies_and_the_same_changes_nothing(path: Path) -> None:
    """reload(): the same bytes leave the very same PolicySet; new bytes make a new one current."""
    store = PolicyStore(path)
    before = store.current
    assert store.reload() == UNCHANGED and store.current is before
    path.write_text(CHANGED)
    assert store.reload() == RELOADED and burst_capacity(store) == 40
    assert store.reloads == {UNCHANGED: 1, RELOADED: 1}


def test_an_invalid_file_keeps_the_last_good_policies_and_says_so_once(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken edit: FAILED, the old policies stay, one error line naming file, line and field; the same
    broken content checked again is not reported again unless asked (SIGHUP); fixed, it loads."""
    store = PolicyStore(path)
    path.write_text(BROKEN)
    with caplog.at_level(logging.ERROR, logger="tornado_rate_limiter.policies"):
        assert store.reload() == FAILED
        assert store.reload() == UNCHANGED
        assert store.reload(force=True) == FAILED
    assert burst_capacity(store) == 20
    errors = [record.getMessage() for record in caplog.records]
    assert len(errors) == 2 and all(f"{path}:4: policies.burst.refil_rate: unknown key" in e for e in errors)
    path.write_text(CHANGED)
    assert store.reload() == RELOADED and burst_capacity(store) == 40
    assert store.reloads[FAILED] == 2


def test_a_file_gone_is_one_failure_until_it_is_back(path: Path) -> None:
    """Deleted: one FAILED, then UNCHANGED while it stays gone; the policies stay; back, it loads."""
    store = PolicyStore(path)
    path.unlink()
    assert [store.reload() for _ in range(3)] == [FAILED, UNCHANGED, UNCHANGED]
    assert burst_capacity(store) == 20
    path.write_text(CHANGED)
    assert store.reload() == RELOADED


def test_a_configmap_symlink_swap_is_followed(tmp_path: Path) -> None:
    """Kubernetes mounts a ConfigMap as limits.toml -> ..data/limits.toml, ..data -> ..<timestamp>/, and
    updates it by pointing ..data at a new directory (one rename): the new content is found."""
    for version, text in (("..v1", EXAMPLE), ("..v2", CHANGED)):
        (tmp_path / version).mkdir()
        (tmp_path / version / "limits.toml").write_text(text)
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "limits.toml").symlink_to("..data/limits.toml")
    store = PolicyStore(tmp_path / "limits.toml")
    assert burst_capacity(store) == 20
    (tmp_path / "..data_tmp").symlink_to("..v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")  # what the kubelet does
    assert store.reload() == RELOADED and burst_capacity(store) == 40


def test_watch_finds_a_change_within_its_interval(path: Path) -> None:
    """watch(interval) checks the content on its own: a change is current within a few intervals."""

    async def scenario() -> float:
        store = PolicyStore(path)
        watcher = asyncio.create_task(store.watch(interval=0.02))
        path.write_text(CHANGED)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if burst_capacity(store) == 40:
                break
        watcher.cancel()
        return burst_capacity(store)

    assert asyncio.run(scenario()) == 40


def test_an_invalid_file_at_start_raises(tmp_path: Path) -> None:
    """At start there is no good set to keep: the error is raised (the service exits 2 with it)."""
    file = tmp_path / "limits.toml"
    file.write_text(BROKEN)
    with pytest.raises(PolicyFileError, match=r"limits\.toml:4: policies\.burst\.refil_rate"):
        PolicyStore(file)


def test_a_file_gone_again_after_coming_back_is_reported_again(path: Path) -> None:
    """Gone, back with the same content (UNCHANGED), gone again: the second loss is a new failure."""
    store = PolicyStore(path)
    path.unlink()
    assert store.reload() == FAILED
    path.write_text(EXAMPLE)
    assert store.reload() == UNCHANGED
    path.unlink()
    assert store.reload() == FAILED


def test_the_watch_outlives_a_bug_in_a_reload(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload that raises something unforeseen is logged, and the next check still runs: reloads
    must never silently stop."""
    store = PolicyStore(path)
    calls = []

    def failing_once(*, force: bool = False) -> str:
        calls.append(force)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return "unchanged"

    monkeypatch.setattr(store, "reload", failing_once)

    async def watch_briefly() -> None:
        task = asyncio.create_task(store.watch(0.01))
        await asyncio.sleep(0.2)
        task.cancel()

    asyncio.run(watch_briefly())
    assert len(calls) >= 2
