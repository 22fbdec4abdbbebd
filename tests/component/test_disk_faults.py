"""A full disk and a read-only output folder: a clear alloylm error, nothing built earlier damaged.

Both use a small tmpfs mounted for the test (needs root and mount; skipped otherwise). Permission
bits are no test as root (root writes through them), a read-only mount is.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests import faults

from alloylm.cli.main import main


@contextmanager
def tmpfs(size: str) -> Iterator[Path]:
    point = Path("/tmp") / f"alloy-tmpfs-{uuid.uuid4().hex[:8]}"
    point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True
    )
    if mounted.returncode != 0:
        point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)
        point.rmdir()


def remount_read_only(point: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)


def pipeline(folder: Path, output: Path, data: dict, *, with_merge: bool) -> Path:
    stages = {
        "eval": {
            "kind": "eval",
            "models": ["tiny:llama"],
            "protocols": ["cloze"],
            "resamples": 10,
            "workers": 1,
            "cache": False,
            "tasks": [{"path": data["mcq"], "type": "mcq", "name": "mcq"}],
        }
    }
    if with_merge:  # ~13 MB of tensors: more than the disk holds
        stages["merge"] = {
            "kind": "merge",
            "method": "slerp",
            "base_model": "tiny:llama",
            "models": ["tiny:llama:1"],
        }
    return faults.write_pipeline(folder, stages, output=str(output))


def cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.mark.timeout(180)
def test_full_disk_fails_clearly_and_keeps_what_was_built(
    tmp_path, capsys, tiny_llama, tiny_llama_other
):
    data = faults.write_data(tmp_path / "data")
    with tmpfs("4m") as disk:
        output = disk / "out"
        code, text = cli(["run", str(pipeline(tmp_path, output, data, with_merge=False))], capsys)
        assert code == 0, text
        before = snapshot(output / "eval")

        code, text = cli(["run", str(pipeline(tmp_path, output, data, with_merge=True))], capsys)
        assert code == 1, text
        assert "Traceback" not in text
        assert "no space left on the device" in text and "hint" in text, text
        assert snapshot(output / "eval") == before  # the earlier artifact is untouched
        assert not (output / "merge").exists()
        assert faults.leftover_temporaries(output) == []  # the half-written merge is gone
        json.loads((output / "eval" / "alloy.json").read_text())


@pytest.mark.timeout(180)
def test_read_only_output_fails_clearly_and_keeps_what_was_built(tmp_path, capsys, tiny_llama):
    data = faults.write_data(tmp_path / "data")
    with tmpfs("4m") as disk:
        output = disk / "out"
        path = pipeline(tmp_path, output, data, with_merge=False)
        assert cli(["run", str(path)], capsys)[0] == 0
        before = snapshot(output / "eval")
        remount_read_only(disk)

        code, text = cli(["run", str(path), "--force", "eval"], capsys)
        assert code in (1, 2), text
        assert "Traceback" not in text
        assert "read-only" in text and "hint" in text, text
        assert snapshot(output / "eval") == before
        # still usable: a plain rerun finds it built, writing nothing
        code, text = cli(["run", str(path)], capsys)
        assert code == 0 and "skip" in text, text
