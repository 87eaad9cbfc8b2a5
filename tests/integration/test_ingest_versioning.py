"""DVC versioning of the curated dataset on its own: real git, real DVC, a real local remote.

Parallel writers (a backfill's ingests), a re-delivered day, and reading any version back from the
remote alone (the data repository's DVC cache deleted).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from tollgate.data import generator, schema
from tollgate.data.versioning import DataRepo

pytestmark = pytest.mark.integration

ROWS = 500


def _clean_file(root: Path, day: str, seed: int = 7) -> str:
    path = root / "clean" / f"{day}-{seed}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(generator.to_parquet_bytes(generator.generate(day, rows=ROWS, seed=seed)))
    return str(path)


def _publish(args: tuple[str, str, str, str]) -> tuple[str, bool]:
    repo, remote, day, clean = args
    version = DataRepo(repo, remote, window_days=3).publish(day, clean, 0, log=lambda _: None)
    return version.tag, version.created


def _read(repo: Path, rev: str) -> pd.DataFrame:
    import dvc.api

    with dvc.api.open(schema.CURATED_PATH, repo=str(repo), rev=rev, mode="rb") as handle:
        return pd.read_parquet(io.BytesIO(handle.read()))


def test_parallel_ingests_serialise_on_the_lock(tmp_path: Path):
    repo, remote = tmp_path / "repo", str(tmp_path / "remote")
    days = ["2024-03-01", "2024-03-02", "2024-03-03"]
    jobs = [(str(repo), remote, day, _clean_file(tmp_path, day)) for day in days]

    with ProcessPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(_publish, jobs))

    assert sorted(results) == [(f"data-{d}", True) for d in days]
    versions = DataRepo(repo, remote).versions()
    assert sorted(v["tag"] for v in versions) == [f"data-{d}" for d in days]
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True)
    assert status.stdout == "", "a writer left the data repository dirty"
    for version in versions:  # each version holds exactly the days of its window that existed then
        assert len(_read(repo, version["rev"])) == ROWS * len(version["partitions"])


def test_redelivered_day_gets_a_new_tag_and_the_old_version_stays(tmp_path: Path):
    repo, remote = tmp_path / "repo", str(tmp_path / "remote")
    data = DataRepo(repo, remote, window_days=3)
    first = data.publish("2024-03-01", _clean_file(tmp_path, "2024-03-01", seed=7), 0, log=lambda _: None)
    same = data.publish("2024-03-01", _clean_file(tmp_path, "2024-03-01", seed=7), 0, log=lambda _: None)
    second = data.publish("2024-03-01", _clean_file(tmp_path, "2024-03-01", seed=8), 4, log=lambda _: None)

    assert (same.rev, same.created) == (first.rev, False)
    assert second.created and second.tag == "data-2024-03-01-v2" and second.rev != first.rev
    assert second.quarantined_rows == 4
    old, new = _read(repo, first.tag), _read(repo, second.tag)
    assert len(old) == len(new) == ROWS and not old.equals(new)


def test_versions_are_served_by_the_remote_alone(tmp_path: Path):
    repo, remote = tmp_path / "repo", str(tmp_path / "remote")
    version = DataRepo(repo, remote).publish(
        "2024-03-01", _clean_file(tmp_path, "2024-03-01"), 0, log=lambda _: None
    )
    shutil.rmtree(repo / ".dvc" / "cache")  # only git pointers left here; the data must come from the remote
    (repo / schema.CURATED_PATH).unlink()

    fetched = tmp_path / "fetched.parquet"
    subprocess.run(
        [str(Path(sys.executable).with_name("dvc")), "get", str(repo),
         schema.CURATED_PATH, "--rev", version.tag, "-o", str(fetched)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    assert len(pd.read_parquet(fetched)) == ROWS
    assert version.dvc_md5 in (repo / f"{schema.CURATED_PATH}.dvc").read_text()


def test_a_crash_between_commit_and_tag_is_adopted_by_the_retry(tmp_path: Path, monkeypatch):
    """The writer dies right after `git commit`, before `git tag` (simulated at that exact call; git and
    DVC are real). The retry finds the untagged commit whose manifest is this version and tags it, instead
    of failing on every retry with nothing to commit."""
    from tollgate.data import versioning

    repo, remote = tmp_path / "repo", str(tmp_path / "remote")
    clean = _clean_file(tmp_path, "2024-03-01")
    real_git = versioning._git

    def crash_at_tag(path, *args, **kwargs):
        if args[:2] == ("tag", "-a"):
            raise SystemExit("worker killed between commit and tag")
        return real_git(path, *args, **kwargs)

    monkeypatch.setattr(versioning, "_git", crash_at_tag)
    with pytest.raises(SystemExit):
        DataRepo(repo, remote, window_days=3).publish("2024-03-01", clean, 0, log=lambda _: None)
    monkeypatch.setattr(versioning, "_git", real_git)
    head = real_git(repo, "rev-parse", "HEAD")
    assert real_git(repo, "tag", "--points-at", head) == ""  # the crash window: committed, untagged

    lines: list[str] = []
    version = DataRepo(repo, remote, window_days=3).publish("2024-03-01", clean, 0, log=lines.append)
    assert (version.tag, version.rev, version.created) == ("data-2024-03-01", head, True)
    assert any("Adopted the untagged commit" in line for line in lines)
    assert len(_read(repo, version.tag)) == ROWS
    again = DataRepo(repo, remote, window_days=3).publish("2024-03-01", clean, 0, log=lambda _: None)
    assert (again.rev, again.created) == (head, False)
