"""Replacing a built folder: a kill at any instant leaves the old folder or the new one."""

import os

import pytest

from alloylm import atomic
from alloylm.atomic import atomic_directory, clean_stale_temporaries

pytestmark = pytest.mark.timeout(30)


def _build(target, text):
    with atomic_directory(target) as work:
        (work / "model.txt").write_text(text)


def test_replacing_a_folder_leaves_only_the_new_one(tmp_path):
    target = tmp_path / "merge"
    _build(target, "old")
    _build(target, "new")
    assert (target / "model.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merge"]


def test_the_two_rename_fallback_replaces_too(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_rename_exchange", lambda a, b: False)
    target = tmp_path / "merge"
    _build(target, "old")
    _build(target, "new")
    assert (target / "model.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merge"]


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="renameat2 is Linux's")
def test_rename_exchange_swaps_two_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "f").write_text("A")
    (b / "f").write_text("B")
    assert atomic._rename_exchange(a, b)
    assert (a / "f").read_text() == "B" and (b / "f").read_text() == "A"


def test_a_swap_killed_between_its_renames_gets_the_old_folder_back(tmp_path):
    # what a SIGKILL after `target -> aside` and before `tmp -> target` leaves on disk
    dead_pid = 2**22 + 12345  # above Linux's default pid_max: no such process
    aside = tmp_path / f".merge.tmp-{dead_pid}-0badf00d{atomic.PREVIOUS_SUFFIX}"
    aside.mkdir()
    (aside / "model.txt").write_text("old")
    half_built = tmp_path / f".merge.tmp-{dead_pid}-12345678"
    half_built.mkdir()
    clean_stale_temporaries(tmp_path)
    assert (tmp_path / "merge" / "model.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merge"]


def test_a_previous_folder_never_overwrites_a_target_that_exists(tmp_path):
    dead_pid = 2**22 + 12345
    (tmp_path / "merge").mkdir()
    (tmp_path / "merge" / "model.txt").write_text("current")
    aside = tmp_path / f".merge.tmp-{dead_pid}-0badf00d{atomic.PREVIOUS_SUFFIX}"
    aside.mkdir()
    clean_stale_temporaries(tmp_path)
    assert (tmp_path / "merge" / "model.txt").read_text() == "current"
    assert not aside.exists()
