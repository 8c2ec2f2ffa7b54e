"""Preflight: every check that needs the disk, a model's files or the environment, before any work.

Configs check their values when they are built and never touch the disk (:mod:`sdft.config`).
What remains is checked here, once per command, before any model loads or any row is
generated: input data (the file exists and its first rows have the fields), output paths
(:func:`sdft.store.check_output`: not an input, writable, nothing there sdft did not write),
models (every form :func:`sdft.models.resolve_model` takes, without loading or converting
anything), templates, verifier options, LoRA targets (on a weightless skeleton), tracker
packages, an eval's probe files and ``--push-to-hub``. Every problem is collected, so one
:class:`~sdft.errors.ConfigError` lists them all.

API:

* :func:`validate` — build a config from data and preflight it: the one call of a command.
* :func:`check` — preflight a built config (raise on problems); :func:`problems` — the list.
* per config: :func:`rewrite_problems`, :func:`replay_problems`, :func:`train_problems`,
  :func:`eval_problems`, :func:`pipeline_problems`, :func:`compare_problems`; and the pieces
  :func:`model_problem`, :func:`data_problems`, :func:`output_problems`, :func:`hub_problems`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from sdft.errors import ConfigError, InputError, SdftError

T = TypeVar("T")
#: Rows read from a local dataset to check its fields (a bad row further in fails when the run scans it).
DATA_PROBE_ROWS = 16


def validate(cls: type[T], data: Mapping[str, Any], *, source: str | None = None, **options: Any) -> T:
    """Build ``cls`` from ``data`` and preflight it; one ConfigError lists every problem of both.

    Preflight runs on whatever could be built (bad keys left out), so a typo in one section does
    not hide a missing file in another.

    Args:
        cls: the config class (``RewriteConfig``, ``PipelineConfig``, ...).
        data: its settings.
        source: where they came from (named in the error).
        **options: passed to :func:`problems` (``write``, ``push_to_hub``, ...).
    """
    from sdft.config import build

    obj, found = build(cls, data)
    if obj is not None:
        found = [*found, *(p for p in problems(obj, **options) if p not in found)]
    if found or obj is None:
        raise ConfigError(found or [f"could not build {cls.__name__}"], source=source)
    return obj


def check(cfg: Any, **options: Any) -> None:
    """Raise one ConfigError listing every preflight problem of ``cfg`` (see :func:`problems`)."""
    found = problems(cfg, **options)
    if found:
        raise ConfigError(found)


def problems(cfg: Any, *, write: bool = True, push_to_hub: str | None = None, **options: Any) -> list[str]:
    """Every preflight problem of a config, dispatched on its type.

    Args:
        cfg: a built config.
        write: also check the output paths (False: validation only, nothing is created).
        push_to_hub: a ``--push-to-hub`` repo id to check (token, offline switch).
        **options: per-type options (``tuned_exist`` for an EvalConfig).
    """
    from sdft.compare.config import CompareConfig
    from sdft.eval.config import EvalConfig
    from sdft.pipeline import PipelineConfig
    from sdft.replay import ReplayConfig
    from sdft.rewrite import RewriteConfig
    from sdft.train import TrainConfig

    checks: list[tuple[type, Any]] = [
        (RewriteConfig, rewrite_problems), (ReplayConfig, replay_problems), (TrainConfig, train_problems),
        (EvalConfig, eval_problems), (PipelineConfig, pipeline_problems), (CompareConfig, compare_problems),
    ]
    found: list[str] = []
    for kind, fn in checks:
        if isinstance(cfg, kind):
            found = fn(cfg, write=write, **options)
            break
    else:
        raise TypeError(f"no preflight for {type(cfg).__name__}")
    return found + hub_problems(push_to_hub)


# ---------------------------------------------------------------------------------------------
# the pieces


def model_problem(model: str, where: str = "model") -> str | None:
    """Why ``model`` cannot be loaded (None when it can), without loading or converting anything.

    Every model form: the alias (its package must be installed), a ``.gguf`` file, a HF model
    or LoRA adapter folder, or a Hub id ``ORG/NAME`` (fetched, or found in the cache, when loaded).
    """
    from sdft.eval.config import model_problem as form_problem
    from sdft.models import ALIASES, _alias_gguf

    if not isinstance(model, str) or not model.strip():
        return f"{where}: empty"
    if model in ALIASES:
        try:
            _alias_gguf(model)
        except InputError as e:
            return f"{where}: {e}"
        return None
    problem = form_problem(model)
    return f"{where}: {problem}" if problem else None


def data_problems(spec: Any, where: str = "data") -> list[str]:
    """A local dataset exists and its first rows have the fields the format needs (Hub names pass)."""
    from sdft.data import DataSpec, iter_examples, looks_like_path, resolve_data_path

    if not str(spec.path).strip():
        return [f"{where}: no dataset given"]
    try:
        local = Path(resolve_data_path(spec.path)).exists()
    except InputError as e:
        return [f"{where}: {e}"]
    if not local:
        return [f"{where}: no such file or directory: {spec.path}"] if looks_like_path(spec.path) else []
    try:
        probe = DataSpec(**{**spec.__dict__, "limit": min(spec.limit or DATA_PROBE_ROWS, DATA_PROBE_ROWS)})
        for _ in iter_examples(probe):
            pass
    except InputError as e:
        return [f"{where}: {e}"]
    return []


def output_problems(output: str, *, folder: bool = False, protect: Iterable[str] = (),
                    where: str = "output") -> list[str]:
    """:func:`sdft.store.check_output` as a problem list (it creates missing parent folders)."""
    from sdft.store import check_output

    if not str(output).strip():
        return [f"{where}: no output path given"]
    try:
        check_output(output, folder=folder, protect=list(protect))
    except InputError as e:
        return [str(e)]
    return []


def folder_problem(path: str, where: str) -> list[str]:
    """A run folder must not be a file."""
    p = Path(path)
    return [f"{where}: '{path}' is a file, not a folder"] if p.exists() and not p.is_dir() else []


def hub_problems(repo_id: str | None) -> list[str]:
    """``--push-to-hub REPO``: the repo id, ``huggingface_hub``, online mode and a token (no request)."""
    if not repo_id:
        return []
    from sdft import hub

    try:
        hub.preflight(repo_id)
    except SdftError as e:
        return [str(e)]
    return []


def verifier_problems(name: str, options: Mapping[str, Any], where: str = "verifier") -> list[str]:
    """Build the verifier once: unknown names, unknown options and bad values show here."""
    if name == "auto" and not options:
        return []
    from sdft.verify import get_verifier

    try:
        get_verifier("none" if name == "auto" else name, **dict(options))
    except ConfigError as e:
        return [f"{where}: {p}" for p in e.problems]
    return []


def lora_problems(model: str, train: Any) -> list[str]:
    """LoRA targets the model lacks, on a weightless skeleton (only for a model already on disk)."""
    if train.finetune != "lora":
        return []
    from sdft.models import ALIASES, is_local_model_dir, sdft_home

    folder = sdft_home() / "models" / model if model in ALIASES else Path(model)
    if not is_local_model_dir(folder) or not (folder / "config.json").exists():
        return []  # not materialised yet / a Hub id / an adapter: train() checks before loading weights
    from sdft.train import check_lora_targets

    try:
        return check_lora_targets(str(folder), list(train.lora_target_modules))
    except Exception as e:  # an unreadable config is reported, not fatal to validation
        return [f"model: could not read {folder}/config.json ({type(e).__name__}: {e})"]


def tracker_problems(report_to: str) -> list[str]:
    """Each ``report_to`` tracker's package is installed."""
    from sdft.tracking import check_trackers

    try:
        check_trackers(report_to)
    except SdftError as e:
        return [f"report_to: {e}"]
    return []


def _local(path: str) -> bool:
    return Path(path).expanduser().exists()


# ---------------------------------------------------------------------------------------------
# per config


def rewrite_problems(cfg: Any, *, write: bool = True) -> list[str]:
    """A rewrite: the data, the model, the template, the verifier, the server, the output (``write``)."""
    found = data_problems(cfg.data_spec(), "input")
    found += [p for p in [model_problem(cfg.model)] if p]
    found += rewrite_setting_problems(cfg)
    if write:
        found += rewrite_output_problems(cfg)
    return found


def rewrite_setting_problems(cfg: Any) -> list[str]:
    """The rewrite section's own files and options: the template, the verifier, the server URL."""
    found = []
    if cfg.template:
        if not Path(cfg.template).is_file():
            found.append(f"template: no such file: {cfg.template}")
        else:
            try:
                cfg.prompt()
            except (InputError, OSError, ValueError) as e:
                found.append(f"template: {e}")
    return found + verifier_problems(cfg.verifier, cfg.verifier_options) + _server_problems(cfg)


def rewrite_output_problems(cfg: Any) -> list[str]:
    """The rewrite's output path (:func:`output_problems` with the inputs protected)."""
    from sdft.formats import is_folder_format
    from sdft.rewrite import protected_paths

    try:
        protect = protected_paths(cfg)
    except InputError:  # a bad input is reported by data_problems
        protect = [p for p in (cfg.template, cfg.model) if p and _local(p)]
    return output_problems(cfg.output, folder=is_folder_format(cfg.output_format), protect=protect)


def replay_problems(cfg: Any, *, write: bool = True) -> list[str]:
    """A replay: the model and the output (``write``)."""
    from sdft.formats import is_folder_format

    found = [p for p in [model_problem(cfg.model)] if p] + _server_problems(cfg)
    if write:
        found += output_problems(cfg.output, folder=is_folder_format(cfg.output_format),
                                 protect=[cfg.model] if _local(cfg.model) else [])
    return found


def train_problems(cfg: Any, *, write: bool = True) -> list[str]:
    """A training run: the model, LoRA targets, tracker packages, the output folder."""
    found = [p for p in [model_problem(cfg.model)] if p]
    if not found:
        found += lora_problems(cfg.model, cfg)
    found += tracker_problems(cfg.report_to)
    return found + folder_problem(cfg.output_dir, "output_dir")


def eval_problems(cfg: Any, *, write: bool = True, tuned_exist: bool = True) -> list[str]:
    """An eval: every model and its name, probe files, the gate, the output folder, the server.

    Args:
        tuned_exist: False while validating a recipe whose tuned model is made later.
    """
    found: list[str] = []
    if tuned_exist:
        found += cfg._model_problems()
        if cfg.max_drop and not cfg.tuned:
            found.append("max_drop needs at least one tuned model to compare with the base")
        if cfg.backend == "openai" and cfg.tuned:
            found.append("backend openai: the server answers as one model, so it cannot be the base and a tuned "
                         "model at once: evaluate each model served at base_url in its own `sdft eval --model "
                         "MODEL --backend openai` run, or use backend vllm/hf")
    remote = False
    for suite, path in cfg.data.items():
        if not isinstance(path, str) or not path.strip() or _local(path):
            continue
        if suite == "task" and not _looks_local(path):
            remote = True  # a Hub dataset: read when the eval starts
        else:
            found.append(f"data.{suite}: {path}: no such file")
    if not found and not remote:
        try:  # every probe set is read now: a bad probe file fails before any model loads
            from sdft.eval.run import load_suites

            load_suites(cfg)
        except InputError as e:
            found.append(str(e))
    found += _server_problems(cfg)
    return found + folder_problem(cfg.output_dir, "output_dir")


def _looks_local(path: str) -> bool:
    from sdft.data import looks_like_path

    return looks_like_path(path)


def _server_problems(cfg: Any) -> list[str]:
    url = getattr(cfg, "base_url", None)
    if cfg.backend == "openai" and url and not str(url).startswith(("http://", "https://")):
        return [f"base_url must start with http:// or https://, got '{url}'"]
    return []


def pipeline_problems(cfg: Any, *, write: bool = True) -> list[str]:
    """A ``sdft train`` recipe: data, models, replay file, rewrite section, LoRA targets, trackers, eval section."""
    found = data_problems(cfg.data.spec(), "data")
    found += [p for p in [model_problem(cfg.model)] if p]
    if cfg.rewrite_model:
        found += [p for p in [model_problem(cfg.rewrite_model, "rewrite_model")] if p]
    if cfg.replay and not _local(cfg.replay):
        found.append(f"replay: file not found: {cfg.replay}")
    if cfg.method == "sdft":
        rc = cfg.rewrite_config()
        found += [f"rewrite.{p}" for p in rewrite_setting_problems(rc)]
        if write:
            found += rewrite_output_problems(rc)
    if not any(p.startswith("model:") for p in found):
        found += lora_problems(cfg.model, cfg.train_config())
    found += [f"train.{p}" for p in tracker_problems(cfg.train.report_to)]
    if cfg.eval is not None:
        found += [f"eval.{p}" for p in eval_problems(cfg.eval_config([]), tuned_exist=False)
                  if not p.startswith("output_dir")]
    return found + folder_problem(cfg.output_dir, "output_dir")


def compare_problems(cfg: Any, *, write: bool = True) -> list[str]:
    """A comparison: the shared recipe, the task eval file, every method's LoRA targets."""
    found = [p for p in pipeline_problems(cfg.pipeline, write=False) if not p.startswith("output_dir")]
    sec = cfg.section
    if sec.task_eval and _looks_local(sec.task_eval) and not _local(sec.task_eval):
        found.append(f"compare.task_eval: no such file: {sec.task_eval}")
    for m in cfg.methods:  # the recipe runs as sft above: each rewriting method's own rewrite settings
        if m.answers == "rewrite":
            rc = cfg.rewrite_config(m, cfg.data_dir / "task_train.jsonl")
            found += [f"methods.{m.name}: rewrite.{p}" for p in rewrite_setting_problems(rc)]
    if not any(p.startswith("model:") for p in found):
        shared = set(found)  # the recipe's own train section is checked above: report what a method adds
        for m in cfg.methods:
            tc = cfg.train_config(m, 0, cfg.output_dir / "units" / m.name / "seed-0" / "model")
            found += [f"methods.{m.name}: {p}" for p in lora_problems(cfg.pipeline.model, tc) if p not in shared]
    return found + folder_problem(str(cfg.output_dir), "output_dir")
