"""Preference trainers are built with datasets' progress bars off (TRL tokenizes through
datasets.map, which printed a bar per pass under the stage's own progress), then restored."""

from __future__ import annotations

import datasets

from alloylm.train.preference_fit import _quiet_datasets


def test_no_map_bar_inside_and_the_setting_restored(capfd):
    datasets.enable_progress_bars()
    rows = datasets.Dataset.from_list([{"x": i} for i in range(5)])
    with _quiet_datasets():
        assert datasets.are_progress_bars_disabled()
        rows.map(lambda r: {"y": r["x"]}, desc="Tokenizing train dataset")
    assert "Tokenizing" not in capfd.readouterr().err
    assert not datasets.are_progress_bars_disabled()


def test_bars_stay_off_when_they_were_off():
    datasets.disable_progress_bars()
    try:
        with _quiet_datasets():
            pass
        assert datasets.are_progress_bars_disabled()
    finally:
        datasets.enable_progress_bars()
