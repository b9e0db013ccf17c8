"""The catalog snapshot and the registry: sources, conflicts, rescans and hot reload."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flwd.errors import JobNotFound, JobNotRunnable
from flwd.hookspecs import hookimpl
from flwd.jobs.catalog import Catalog
from flwd.jobs.registry import JobRegistry
from flwd.jobs.scanner import ROOT_ID
from flwd.plugins import make_plugin_manager
from flwd.settings import JobSource, Settings, SettingsError
from tests.unit.conftest import JobsTree

WAIT = 10.0  # seconds; generous for a loaded CI machine, never reached when things work


def registry_for(*roots: tuple[str, Path], watch: bool = True) -> JobRegistry:
    sources = tuple(JobSource(name=name, path=str(path)) for name, path in roots)
    return JobRegistry(
        Settings(sources=sources, watch=watch), make_plugin_manager(load_entrypoints=False)
    )


async def wait_until(registry: JobRegistry, predicate: Callable[[Catalog], bool]) -> Catalog:
    """The first catalog satisfying `predicate`, waiting on swaps (not sleeping)."""
    deadline = time.monotonic() + WAIT
    catalog = registry.catalog
    while not predicate(catalog):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"catalog never matched; last: {catalog!r} {catalog.invalid}")
        catalog = await registry.wait_for_change(catalog.version, timeout=remaining)
    return catalog


def test_catalog_lookup_and_filters(jobs_tree: JobsTree) -> None:
    jobs_tree.add("backup/daily")
    jobs_tree.add("backup/weekly")
    jobs_tree.add("hello")
    jobs_tree.add("broken", "command: [\n")
    catalog = registry_for(("local-fs", jobs_tree.root)).catalog
    assert len(catalog) == 3
    assert catalog.version == 1
    assert [j.id for j in catalog.list()] == ["backup/daily", "backup/weekly", "hello"]
    assert [j.id for j in catalog.list(namespace="backup")] == ["backup/daily", "backup/weekly"]
    assert catalog.list(source="other") == []
    assert catalog.get("hello").id == "hello"
    with pytest.raises(JobNotFound):
        catalog.get("nope")
    with pytest.raises(JobNotRunnable) as caught:
        catalog.get("broken")
    assert "config.yaml:1" in caught.value.reasons[0] or "config.yaml:2" in caught.value.reasons[0]
    assert [bad.id for bad in catalog.invalid] == ["broken"]


def test_sources_info_and_cross_source_conflicts(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for root, ids in ((one, ["shared", "a"]), (two, ["shared", "b"])):
        for job_id in ids:
            (root / job_id).mkdir(parents=True)
            (root / job_id / "config.yaml").write_text("command: x\n")
    registry = registry_for(("one", one), ("two", two))
    assert registry.source_info() == [
        {"name": "one", "type": "fs", "path": str(one)},
        {"name": "two", "type": "fs", "path": str(two)},
    ]
    catalog = registry.catalog
    assert [j.id for j in catalog.list()] == ["a", "b"]
    assert catalog.list(source="two")[0].source == "two"
    assert sorted(bad.source for bad in catalog.invalid if bad.id == "shared") == ["one", "two"]


def test_missing_source_is_a_diagnostic(tmp_path: Path) -> None:
    catalog = registry_for(("gone", tmp_path / "missing")).catalog
    assert len(catalog) == 0
    (bad,) = catalog.invalid
    assert bad.id == ROOT_ID and "does not exist" in bad.diagnostics[0].reason


def test_unknown_source_type_fails_at_start(tmp_path: Path) -> None:
    settings = Settings(sources=(JobSource(name="s3", path="bucket", type="s3"),))
    with pytest.raises(SettingsError, match="type 's3', which no installed plugin provides"):
        JobRegistry(settings, make_plugin_manager(load_entrypoints=False))


def test_a_plugin_can_replace_the_fs_source_type(tmp_path: Path) -> None:
    from flwd.jobs.fs_source import FsSourceType

    class Fake(FsSourceType):
        opened: list[str] = []

        def open(self, source: JobSource):  # type: ignore[no-untyped-def]
            Fake.opened.append(source.name)
            return super().open(source)

    class Plugin:
        @hookimpl
        def register_source_types(self) -> list[FsSourceType]:
            return [Fake()]

    settings = Settings(sources=(JobSource(name="x", path=str(tmp_path)),))
    JobRegistry(settings, make_plugin_manager(load_entrypoints=False, extra=[Plugin()]))
    assert Fake.opened == ["x"]


def test_rescan_always_makes_a_new_version(jobs_tree: JobsTree) -> None:
    registry = registry_for(("local-fs", jobs_tree.root), watch=False)
    assert registry.rescan().version == 2
    jobs_tree.add("new")
    catalog = registry.rescan()
    assert catalog.version == 3 and "new" in catalog
    assert registry.catalog is catalog


async def test_wait_for_change_times_out_and_returns_at_once(jobs_tree: JobsTree) -> None:
    registry = registry_for(("local-fs", jobs_tree.root), watch=False)
    assert (await registry.wait_for_change(0, timeout=0.01)).version == 1
    with pytest.raises(TimeoutError):
        await registry.wait_for_change(1, timeout=0.05)
    waiter = asyncio.create_task(registry.wait_for_change(1, timeout=WAIT))
    await asyncio.sleep(0)
    await asyncio.to_thread(registry.rescan)  # swaps from another thread wake the waiter
    assert (await waiter).version == 2


async def test_hot_reload_create_edit_break_delete(jobs_tree: JobsTree) -> None:
    jobs_tree.add("stays")
    registry = registry_for(("local-fs", jobs_tree.root))
    assert not registry.watching
    async with registry:
        assert registry.watching
        folder = jobs_tree.add("fresh", "description: one\ncommand: x\n")
        await wait_until(registry, lambda c: "fresh" in c)

        (folder / "config.yaml").write_text("description: two\ncommand: x\n")
        await wait_until(registry, lambda c: "fresh" in c and c.get("fresh").description == "two")

        (folder / "config.yaml").write_text("description: [broken\n")
        catalog = await wait_until(registry, lambda c: "fresh" not in c)
        assert [bad.id for bad in catalog.invalid] == ["fresh"]
        assert "stays" in catalog

        shutil.rmtree(folder)
        catalog = await wait_until(registry, lambda c: not c.invalid)
        assert [j.id for j in catalog.list()] == ["stays"]
    assert not registry.watching


async def test_hot_reload_of_a_script_changes_the_digest(jobs_tree: JobsTree) -> None:
    folder = jobs_tree.add("s", "steps: [{script: run.sh}]\n", files={"run.sh": "echo 1\n"})
    registry = registry_for(("local-fs", jobs_tree.root))
    async with registry:
        digest = registry.catalog.get("s").digest
        (folder / "run.sh").write_text("echo 2\n")
        await wait_until(registry, lambda c: c.get("s").digest != digest)


async def test_source_created_after_start_is_picked_up(tmp_path: Path) -> None:
    root = tmp_path / "later" / "jobs"
    registry = registry_for(("local-fs", root))
    assert registry.catalog.invalid[0].id == ROOT_ID
    async with registry:
        (root / "hello").mkdir(parents=True)
        (root / "hello" / "config.yaml").write_text("command: echo hi\n")
        catalog = await wait_until(registry, lambda c: "hello" in c)
        assert catalog.invalid == ()


async def test_changes_before_watching_starts_are_caught_up(jobs_tree: JobsTree) -> None:
    registry = registry_for(("local-fs", jobs_tree.root))
    jobs_tree.add("early")  # after the initial scan, before any watcher exists
    async with registry:
        assert "early" in registry.catalog


async def test_watching_disabled(jobs_tree: JobsTree) -> None:
    registry = registry_for(("local-fs", jobs_tree.root), watch=False)
    async with registry:
        assert not registry.watching
