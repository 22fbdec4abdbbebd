"""Read mergekit's YAML format (https://github.com/arcee-ai/mergekit#merge-configuration) as is.

Keys: merge_method, slices or models, base_model, parameters, dtype, out_dtype,
tokenizer_source, chat_template. `modules`, `tokenizer` (token surgery) and LoRA model references
(`model+lora`) are refused with a clear message. Parameter semantics (gradients, filters,
lookup order) are mergekit's: see `alloylm.merge.plan`.
"""

from __future__ import annotations

from typing import Any

from alloylm.errors import ConfigError
from alloylm.merge.config import MergeSettings, settings_from_dict

SUPPORTED = {
    "merge_method",
    "slices",
    "models",
    "base_model",
    "parameters",
    "dtype",
    "out_dtype",
    "tokenizer_source",
    "chat_template",
    "name",
}
UNSUPPORTED_HINTS = {
    "modules": "multi-module configs are not supported; use models or slices",
    "tokenizer": "token surgery is not supported; the output gets the base model's tokenizer",
}


def _model_ref(value: Any, key: str, file: str | None) -> str:
    if isinstance(value, dict) and "model" in value:  # mergekit's ModelReference mapping form
        value = value["model"]
    if not isinstance(value, str):
        raise ConfigError(f"expected a model name or path, got {value!r}", file=file, key=key)
    if "+" in value and not value.startswith(("/", ".")):
        raise ConfigError(
            f"LoRA model references ({value}) are not supported",
            file=file,
            key=key,
            hint="merge the LoRA into its base first (peft merge_and_unload)",
        )
    return value


def settings_from_mergekit(data: dict[str, Any], *, file: str | None = None) -> MergeSettings:
    """Translate a mergekit config mapping into `MergeSettings` (same semantics)."""
    _check_keys(data, file)
    native: dict[str, Any] = {"method": data["merge_method"]}
    if data.get("base_model") is not None:
        native["base_model"] = _model_ref(data["base_model"], "base_model", file)
    if data.get("models"):
        native["models"] = _models(data["models"], file)
    if data.get("slices"):
        native["slices"] = _slices(data["slices"], native.get("base_model"), file)
    for key in ("parameters", "dtype", "out_dtype", "tokenizer_source", "chat_template"):
        if data.get(key) is not None:
            native[key] = data[key]
    _check_semantics(native, data, file)
    return settings_from_dict(native, file=file)


def _check_keys(data: dict[str, Any], file: str | None) -> None:
    for key in data:
        if key in UNSUPPORTED_HINTS:
            raise ConfigError(
                f"mergekit key {key!r} is not supported",
                file=file,
                key=key,
                hint=UNSUPPORTED_HINTS[key],
            )
        if key not in SUPPORTED:
            raise ConfigError(
                f"unknown mergekit key {key!r}",
                file=file,
                key=key,
                hint=f"known: {', '.join(sorted(SUPPORTED))}",
            )


def _models(models: list[Any], file: str | None) -> list[dict[str, Any]]:
    out = []
    for i, m in enumerate(models):
        entry = m if isinstance(m, dict) else {"model": m}
        ref = _model_ref(entry.get("model"), f"models.{i}.model", file)
        out.append({"model": ref, "parameters": entry.get("parameters")})
    return out


def _slices(
    slices: list[dict[str, Any]], base_model: str | None, file: str | None
) -> list[dict[str, Any]]:
    out = []
    for i, sl in enumerate(slices):
        sources = [
            {**src, "model": _model_ref(src.get("model"), f"slices.{i}.sources.{j}.model", file)}
            for j, src in enumerate(sl.get("sources", []))
        ]
        if (
            sl.get("base_model")
            and _model_ref(sl["base_model"], f"slices.{i}.base_model", file) != base_model
        ):
            raise ConfigError(
                "a slice's base_model differs from the top-level base_model",
                file=file,
                key=f"slices.{i}.base_model",
                hint="per-slice base models are not supported; set one base_model",
            )
        out.append(
            {
                "sources": sources,
                **({"parameters": sl["parameters"]} if sl.get("parameters") else {}),
            }
        )
    return out


def _check_semantics(native: dict[str, Any], data: dict[str, Any], file: str | None) -> None:
    if native.get("tokenizer_source") == "union":
        raise ConfigError(
            "tokenizer_source: union is not supported",
            file=file,
            key="tokenizer_source",
            hint="use base (the default) or a model",
        )
    has_t = "t" in (native.get("parameters") or {}) or _slices_have_t(data)
    if native["method"] == "slerp" and not has_t:
        raise ConfigError(
            "slerp needs parameter t",
            file=file,
            key="parameters.t",
            hint="mergekit requires t for slerp; e.g. parameters: {t: 0.5}",
        )


def _slices_have_t(data: dict[str, Any]) -> bool:
    return any("t" in (sl.get("parameters") or {}) for sl in data.get("slices") or [])
