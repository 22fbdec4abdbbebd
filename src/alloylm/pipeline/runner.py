"""Run a pipeline: stages in order, each built atomically, skipped when already built.

A stage's content hash covers its config, its parents' hashes, the bytes of every file and folder
it declares in `inputs(cfg)`, the identity of its model sources, the run seed and the alloylm
version; not where the project lies (paths are hashed relative to the pipeline file, declared
files by content), so a moved or copied project is not rebuilt. A finished artifact
with the same hash is skipped. A run killed at any point leaves no half-written artifact (each is
built in a temporary folder and renamed) and the next run continues: finished stages are skipped
and a training stage resumes from its last checkpoint in `<output>/.alloy/state/<stage>/`.
"""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alloylm import __version__
from alloylm.atomic import atomic_directory, atomic_write_text, clean_stale_temporaries
from alloylm.config.pipeline import (
    STAGE_REF,
    Pipeline,
    StageSpec,
    absolutize_paths,
    resolve_stage_refs,
)
from alloylm.contract import Progress, StageContext, StageResult
from alloylm.errors import AlloyError
from alloylm.hashing import hash_json, sha256_path
from alloylm.lineage import read_manifest, write_manifest
from alloylm.pipeline.graph import topological_order
from alloylm.pipeline.tracking import (
    check_trackers_installed,
    log_stage_metrics,
    resolve_tracking,
    tracking_environment,
)


@dataclass
class Launcher:
    kind: str | None = None  # None (in-process), "accelerate" or "torchrun"
    num_processes: int = 1  # per node
    config_file: str | None = None
    nodes: Any = None  # alloylm.pipeline.launch.Nodes for several machines; None: this one


@dataclass
class StageOutcome:
    name: str
    kind: str
    status: str  # built | skipped | failed | not run
    path: Path
    wall_s: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def model_identity(source: str) -> str:
    """A stable identity for a model source, for content hashes.

    A pipeline artifact is named by its own content hash; any other local folder by the bytes of
    its model files (not its path or mtimes, and not files beside the model such as results), so a
    moved or copied project keeps its hashes; embedded models by their packaged file.
    """
    from alloylm.hashing import file_fingerprint
    from alloylm.models.sources import source_scheme

    scheme = source_scheme(source)
    if scheme == "embedded":
        from alloylm.models.embedded import embedded_gguf_path

        return f"{source}@{file_fingerprint(embedded_gguf_path(source.split(':', 1)[1]))}"
    if scheme == "local":
        path = Path(source)
        manifest = read_manifest(path) if path.is_dir() else None
        if manifest:
            return f"artifact@{manifest['content_hash']}"
        if not path.exists():
            return f"missing@{source}"
        from alloylm.models.identity import model_files_hash

        return f"{'folder' if path.is_dir() else 'file'}@{model_files_hash(path)}"
    return source  # hub ids and tiny models are named by their source string


def file_identity(path: str) -> dict[str, Any] | None:
    """What a declared file or folder contributes to a content hash: its bytes (a folder: every
    file inside, by relative name and bytes) and its suffix (it picks the reader); not where it
    lies, so that a moved project keeps its hashes. None for a missing path."""
    location = Path(path)
    if not location.exists():
        return None
    return {"sha256": sha256_path(location), "suffix": location.suffix}


def location_free(value: Any, base_dir: Path, declared: dict[str, str]) -> Any:
    """The config for hashing: a declared input's path becomes ${input:KEY} (its content is hashed
    under KEY), any other absolute path inside the pipeline's folder becomes relative to it."""
    if isinstance(value, dict):
        return {k: location_free(v, base_dir, declared) for k, v in value.items()}
    if isinstance(value, list):
        return [location_free(v, base_dir, declared) for v in value]
    if not isinstance(value, str) or not value.startswith(("/", "~")):
        return value
    if value in declared:
        return f"${{input:{declared[value]}}}"
    path = Path(value).expanduser()
    try:
        return "./" + path.relative_to(base_dir).as_posix()
    except ValueError:
        return value


def without_tracking(raw: dict[str, Any]) -> dict[str, Any]:
    """A stage's config without `train.report_to`: where the metrics go is not what the stage
    builds, so it stays out of the content hash (a stage's own `tracking:` never enters it)."""
    train = raw.get("train")
    if not isinstance(train, dict) or "report_to" not in train:
        return raw
    return {**raw, "train": {k: v for k, v in train.items() if k != "report_to"}}


def with_report_to(config: Any, report_to: tuple[str, ...]) -> Any:
    """A training stage's config with the trackers resolved for it (`train.report_to`)."""
    train = getattr(config, "train", None)
    if train is None or not hasattr(train, "report_to"):
        return config
    return config.model_copy(
        update={"train": train.model_copy(update={"report_to": list(report_to)})}
    )


class PipelineRunner:
    def __init__(
        self,
        pipeline: Pipeline,
        *,
        force: set[str] | None = None,
        only: set[str] | None = None,
        launcher: Launcher | None = None,
        progress_factory: Callable[[str], Progress] | None = None,
        on_event: Callable[[str, StageOutcome], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.force = set(force or ())
        self.only = only
        self.launcher = launcher or Launcher()
        self.progress_factory = progress_factory or (lambda name: Progress())
        self.on_event = on_event or (lambda event, outcome: None)
        for name in (self.force | (self.only or set())) - set(pipeline.stages):
            raise AlloyError(
                f"no stage named {name!r}", hint=f"stages: {', '.join(pipeline.stages)}"
            )

    @property
    def output_dir(self) -> Path:
        return self.pipeline.output_dir

    def artifact_dir(self, name: str) -> Path:
        return self.output_dir / name

    def state_dir(self, name: str) -> Path:
        return self.output_dir / ".alloy" / "state" / name

    def run(self) -> list[StageOutcome]:
        order = topological_order(self.pipeline)  # load_pipeline has run every check
        check_trackers_installed(self.pipeline)
        self._prepare_output_dir()
        outcomes: list[StageOutcome] = []
        hashes: dict[str, str] = {}
        forced = set(self.force)  # grows with the stages that follow a forced one
        for name in order:
            spec = self.pipeline.stages[name]
            if self.only is not None and name not in self.only:
                manifest = read_manifest(self.artifact_dir(name))
                if manifest is None:
                    if any(name in self.pipeline.stages[o].depends_on for o in self.only):
                        raise AlloyError(
                            f"--only needs stage {name!r}, which has not been built yet",
                            hint=f"run it first: alloy run {self.pipeline.file.name} --only {name}",
                        )
                    continue
                hashes[name] = manifest["content_hash"]
                continue
            if forced & set(spec.depends_on):
                # a rebuilt parent's output may differ (training is not bit-reproducible), and
                # the content hash sees only its config: rebuild what follows it too
                forced.add(name)
            outcome = self.run_stage(spec, hashes, force=name in forced)
            outcomes.append(outcome)
            if outcome.status == "failed":
                for rest in order[order.index(name) + 1 :]:
                    outcomes.append(
                        StageOutcome(
                            rest,
                            self.pipeline.stages[rest].kind,
                            "not run",
                            self.artifact_dir(rest),
                        )
                    )
                break
        return outcomes

    def content_hash(
        self, spec: StageSpec, hashes: dict[str, str]
    ) -> tuple[str, dict[str, str], list[dict[str, Any]]]:
        """The stage's content hash over exactly what `inputs(cfg)` declares (see InputSpec):
        parents by their hashes, models by identity, files and folders by content; and the
        config with paths made location-free. Also {path: sha256} of the files, for alloy.json."""
        data_hashes: dict[str, str] = {}
        files: dict[str, Any] = {}
        models: dict[str, str] = {}
        parents: list[dict[str, Any]] = []
        declared: dict[str, str] = {}  # absolute path of a declared input -> its key
        for item in spec.module.inputs(spec.config):
            match = STAGE_REF.search(item.value)
            if match:
                # a path inside a parent's artifact: the parent's hash covers its content
                parent = match.group(1)
                parents.append(
                    {
                        "role": item.key,
                        "source": item.value,
                        "stage": parent,
                        "hash": hashes[parent],
                        "path": str(self.artifact_dir(parent)),
                    }
                )
            elif item.kind == "model":
                models[item.key] = model_identity(item.value)
                local = Path(item.value)
                parent = {"role": item.key, "source": item.value, "hash": models[item.key]}
                if local.is_absolute():
                    declared[item.value] = item.key
                if local.is_dir() and read_manifest(local):
                    parent["path"] = str(local.resolve())
                parents.append(parent)
            else:
                files[item.key] = file_identity(item.value)
                declared[item.value] = item.key
                if files[item.key] is not None:
                    data_hashes[item.value] = files[item.key]["sha256"]
        config = absolutize_paths(without_tracking(spec.raw), self.pipeline.base_dir)
        payload = {
            "kind": spec.kind,
            "config": location_free(config, self.pipeline.base_dir, declared),
            "parents": {p["role"]: p["hash"] for p in parents},
            "files": files,
            "models": models,
            "seed": self.pipeline.run.seed,
            "alloylm": __version__,
        }
        return hash_json(payload), data_hashes, parents

    def run_stage(
        self, spec: StageSpec, hashes: dict[str, str], *, force: bool = False
    ) -> StageOutcome:
        target = self.artifact_dir(spec.name)
        content_hash, data_hashes, parents = self.content_hash(spec, hashes)
        hashes[spec.name] = content_hash
        existing = read_manifest(target)
        if existing and existing.get("content_hash") == content_hash and not force:
            outcome = StageOutcome(
                spec.name, spec.kind, "skipped", target, metrics=existing.get("metrics", {})
            )
            self.on_event("skipped", outcome)
            return outcome
        outcome = StageOutcome(spec.name, spec.kind, "running", target)
        self.on_event("start", outcome)
        try:
            state_dir = self._prepare_state_dir(spec.name, content_hash)
        except OSError as error:
            from alloylm.errors import storage_error

            raise (storage_error(error) or error) from None
        started = time.time()
        progress = self.progress_factory(spec.name)
        tracking = resolve_tracking(self.pipeline, spec)
        try:
            outputs = {name: self.artifact_dir(name) for name in hashes}
            resolved = absolutize_paths(
                resolve_stage_refs(spec.raw, outputs), self.pipeline.base_dir
            )
            config = with_report_to(spec.module.Config.model_validate(resolved), tracking.report_to)
            with atomic_directory(target) as work_dir:
                ctx = StageContext(
                    stage_name=spec.name,
                    run_name=self.pipeline.run.name,
                    seed=self.pipeline.run.seed,
                    work_dir=work_dir,
                    state_dir=state_dir,
                    output_root=self.output_dir,
                    progress=progress,
                    launcher=self.launcher.__dict__.copy(),
                )
                with tracking_environment(tracking):
                    result = self._execute(spec, config, ctx)
                wall = time.time() - started
                write_manifest(
                    work_dir,
                    stage=spec.name,
                    kind=spec.kind,
                    produces=spec.module.PRODUCES,
                    config=config.model_dump(mode="json"),
                    parents=parents,
                    content_hash=content_hash,
                    seed=self.pipeline.run.seed,
                    metrics=result.metrics,
                    details=result.details,
                    data_hashes={**data_hashes, **result.data_hashes},
                    outputs=result.outputs,
                    wall_time_s=wall,
                    run_name=self.pipeline.run.name,
                )
        except (Exception, KeyboardInterrupt) as error:
            progress.finish()
            outcome.status, outcome.wall_s = "failed", time.time() - started
            outcome.error = (
                error.render()
                if isinstance(error, AlloyError)
                else f"{type(error).__name__}: {error}"
            )
            if isinstance(error, KeyboardInterrupt):
                self.on_event("failed", outcome)
                raise
            from alloylm.errors import storage_error

            storage = storage_error(error)
            if storage is not None:  # disk full, read-only: say so, no traceback
                outcome.error = storage.render()
            elif not isinstance(error, AlloyError):
                outcome.error += "\n" + traceback.format_exc(limit=8)
            self.on_event("failed", outcome)
            return outcome
        if tracking.report_to and getattr(config, "train", None) is None:
            # a training stage's curves went to the trackers through transformers already
            try:
                log_stage_metrics(tracking, result.metrics, spec.kind, result.details)
            except Exception as error:  # the stage is built; a tracker's failure must not undo it
                progress.log(
                    f"[{spec.name}] warning: its metrics were not logged to "
                    f"{', '.join(tracking.report_to)}: {type(error).__name__}: {error}"
                )
        progress.finish()
        shutil.rmtree(state_dir / "checkpoints", ignore_errors=True)
        outcome.status, outcome.wall_s, outcome.metrics = "built", wall, result.metrics
        self.on_event("built", outcome)
        return outcome

    def _prepare_output_dir(self) -> None:
        """Create the output folder (clear errors for a file in the way or an unwritable disk)
        and remove the temporaries a killed run left."""
        from alloylm.errors import ConfigError, storage_error

        output = self.output_dir
        if output.exists() and not output.is_dir():
            raise ConfigError(
                f"the output path {output} is a file, not a folder",
                file=str(self.pipeline.file),
                key="run.output",
                hint="remove or rename the file, or set run.output to a folder",
            )
        try:
            output.mkdir(parents=True, exist_ok=True)
            clean_stale_temporaries(output)
            for state in (output / ".alloy" / "state").glob("*"):
                clean_stale_temporaries(state)
        except OSError as error:
            raise (storage_error(error) or error) from None

    def _prepare_state_dir(self, name: str, content_hash: str) -> Path:
        state_dir = self.state_dir(name)
        state_dir.mkdir(parents=True, exist_ok=True)
        marker = state_dir / "content_hash"
        if marker.exists() and marker.read_text().strip() != content_hash:
            # Checkpoints of another configuration must not be resumed from.
            shutil.rmtree(state_dir / "checkpoints", ignore_errors=True)
        atomic_write_text(marker, content_hash + "\n")
        return state_dir

    def _execute(self, spec: StageSpec, config: Any, ctx: StageContext) -> StageResult:
        if self.launcher.kind and getattr(spec.module, "DISTRIBUTED", False):
            from alloylm.pipeline.launch import run_stage_distributed

            return run_stage_distributed(
                stage_kind=spec.kind,
                config=config.model_dump(mode="json"),
                ctx_fields={
                    "stage_name": ctx.stage_name,
                    "run_name": ctx.run_name,
                    "seed": ctx.seed,
                    "work_dir": str(ctx.work_dir),
                    "state_dir": str(ctx.state_dir),
                    "output_root": str(ctx.output_root),
                },
                launcher=self.launcher.kind,
                num_processes=self.launcher.num_processes,
                config_file=self.launcher.config_file,
                nodes=self.launcher.nodes,
            )
        from alloylm.models.sources import model_trust

        with model_trust(
            allow_pickle=getattr(config, "allow_pickle", False),
            trust_remote_code=getattr(config, "trust_remote_code", False),
        ):
            result = spec.module.run(ctx, config)
        return result if result is not None else StageResult()
