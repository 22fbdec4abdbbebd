"""Entry point of every rank of a distributed stage: ``python -m alloylm.pipeline.worker spec.json``.

Started by `alloylm.pipeline.launch` through ``accelerate launch`` or ``torchrun``. Rebuilds the
stage's Config and StageContext from the spec, calls the stage's ``run`` (the Trainer inside finds
the process group from the launcher's environment), writes a marker for this rank into
``<state_dir>/ranks/`` and, on rank 0, the StageResult as JSON for the launching process.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from alloylm.atomic import atomic_write_json
from alloylm.contract import Progress, StageContext, StageResult

RANK_METRICS = (
    "distributed_type",
    "partitioned_at_load",
    "parameter_elements_held",
    "total_parameters",
)


class RankProgress(Progress):
    """Progress of one rank: rank 0 reports as usual, the other ranks stay quiet."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def log(self, message: str) -> None:
        if self.rank == 0:
            super().log(message)

    def update(self, step: int, **fields: Any) -> None:
        if self.rank == 0 and fields:
            shown = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()
            )
            print(f"step {step}: {shown}", flush=True)


def peak_rss_mb() -> float:
    """This rank's peak resident memory so far, in MiB (Linux reports ru_maxrss in KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def load_stage(spec: dict[str, Any]) -> Any:
    if spec.get("stage_module"):
        return importlib.import_module(spec["stage_module"])
    from alloylm.registry import STAGE_KINDS

    return STAGE_KINDS.get(spec["stage_kind"])


def build_context(spec: dict[str, Any], rank: int, world_size: int) -> StageContext:
    fields = spec["ctx"]
    return StageContext(
        stage_name=fields["stage_name"],
        run_name=fields.get("run_name", fields["stage_name"]),
        seed=int(fields.get("seed", 42)),
        work_dir=Path(fields["work_dir"]),
        state_dir=Path(fields["state_dir"]),
        output_root=Path(fields.get("output_root", fields["work_dir"])),
        progress=RankProgress(rank),
        launcher={**spec.get("launcher", {}), "rank": rank, "world_size": world_size},
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m alloylm.pipeline.worker <spec.json>", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    rank, world_size = rank_and_world()
    module = load_stage(spec)
    config = module.Config.model_validate(spec["config"])
    ctx = build_context(spec, rank, world_size)
    from alloylm.models.sources import model_trust
    from alloylm.train.distributed import read_launch_config, training_backend

    backend = read_launch_config(spec["config_file"]) if spec.get("config_file") else None
    with (
        model_trust(  # the stage's opt-ins hold on every rank, as in-process
            allow_pickle=getattr(config, "allow_pickle", False),
            trust_remote_code=getattr(config, "trust_remote_code", False),
        ),
        training_backend(backend),
    ):
        result = module.run(ctx, config) or StageResult()
    marker = {
        "rank": rank,
        "world_size": world_size,
        "steps": result.metrics.get("steps"),
        "pid": os.getpid(),
        "backend": backend.kind if backend else "ddp",
        "peak_rss_mb": peak_rss_mb(),
        # ZeRO-3: this rank's share of the parameters' storage, from the loaded model
        **{k: result.metrics[k] for k in RANK_METRICS if k in result.metrics},
    }
    atomic_write_json(Path(spec["ranks_dir"]) / f"rank-{rank}.json", marker)
    if rank == 0:
        atomic_write_json(spec["result_file"], dataclasses.asdict(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
