"""recipes/distill_local.yaml end to end: `alloy serve` on the embedded model, distillation through it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from alloylm.chat.serve import start_server
from alloylm.cli import distill as distill_cli

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "distill_local.yaml"


@pytest.mark.slow
def test_distill_local_recipe_through_a_loopback_server(
    embedded_model: Path, tmp_path: Path
) -> None:
    threads = torch.get_num_threads()
    # One intra-op thread: on a shared 2-core machine this is several times faster than two.
    server, _ = start_server(embedded_model, model_name="embedded:smollm2-135m-instruct", threads=1)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        parser = argparse.ArgumentParser()
        distill_cli.add_arguments(parser)
        shrink = [
            f"vars.teacher_url={url}",
            "stages.distill.max_documents=1",
            "stages.distill.max_chunks=2",
            "stages.distill.teacher.max_tokens=32",
            "stages.distill.generators=[qa, summary, preference]",
        ]
        args = parser.parse_args(["run", str(RECIPE), *shrink, "--out", str(tmp_path / "out")])
        assert distill_cli.run(args) == 0
        stats = json.loads((tmp_path / "out" / "stats.json").read_text())
        for generator in ("qa", "summary", "preference"):
            assert sum(stats["units"][generator].values()) == 2, (
                generator
            )  # every chunk done or counted
        assert (
            stats["units"]["summary"].get("done", 0) >= 1
        )  # the instruct model does write summaries
        assert stats["teacher"]["calls_made"] >= 6 and stats["teacher"]["completion_tokens"] > 0
        cpt = [
            json.loads(line) for line in (tmp_path / "out" / "cpt.jsonl").read_text().splitlines()
        ]
        assert any(
            r["source"]["generator"] == "summary" and r["source"]["chunk"].startswith("m45981#")
            for r in cpt
        )
        # Unchanged rerun into the same folder (its .distill-state holds the cache): zero calls.
        assert distill_cli.run(args) == 0
        again = json.loads((tmp_path / "out" / "stats.json").read_text())
        assert again["teacher"]["calls_made"] == 0 and again["units"] == stats["units"]
    finally:
        server.shutdown()
        server.server_close()
        torch.set_num_threads(threads)
