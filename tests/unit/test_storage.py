"""The one storage layer: a folder of replaceable blobs (checkpoints, ledgers, model output)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tollgate.storage import Folder, UnsupportedLocation

pytestmark = pytest.mark.unit


def test_folder_lists_complete_blobs_only_and_clears_partial_writes(tmp_path: Path):
    folder = Folder(f"file://{tmp_path / 'ckpt'}")
    folder.write("manifest.json", b"{}")
    folder.write("manifest.json", b'{"v": 2}', durable=False)  # replaced whole
    (tmp_path / "ckpt" / ".ckpt-00000010.pt.tmp-99-abcdef12").write_bytes(b"half")  # a killed writer
    assert folder.list() == ["manifest.json"] and folder.read("manifest.json") == b'{"v": 2}'
    assert folder.remove_stale_temps() == [".ckpt-00000010.pt.tmp-99-abcdef12"]
    folder.delete("manifest.json")
    assert not folder.exists("manifest.json") and folder.list() == []


def test_unsupported_scheme_is_bad_input_for_the_trainer(tmp_path: Path, capsys):
    with pytest.raises(UnsupportedLocation, match="use a local folder or s3://bucket/prefix"):
        Folder("gs://bucket/ckpt")
    from tollgate.training import exit_codes
    from tollgate.training.cli import main

    argv = ["--checkpoint-uri", "gs://bucket/ckpt", "--output-uri", str(tmp_path / "out"),
            "--training-run-id", "r1", "--data-file", str(tmp_path / "x.parquet")]  # fmt: skip
    assert main(argv) == exit_codes.BAD_INPUT
    assert "unsupported storage URI 'gs://bucket/ckpt'" in capsys.readouterr().err
