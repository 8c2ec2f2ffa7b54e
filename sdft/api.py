"""The Python API: what the ``sdft`` commands do, as five functions.

``sdft.rewrite``, ``sdft.replay``, ``sdft.train``, ``sdft.evaluate`` and ``sdft.compare`` (defined
here, exported lazily by :mod:`sdft`) each take either the config object the CLI builds
(:class:`~sdft.rewrite.RewriteConfig`, :class:`~sdft.replay.ReplayConfig`,
:class:`~sdft.pipeline.PipelineConfig` or :class:`~sdft.train.TrainConfig`,
:class:`~sdft.eval.config.EvalConfig`, :class:`~sdft.compare.config.CompareConfig`) or the same
settings as keyword arguments, which are validated exactly like a recipe (every problem at once,
one :class:`~sdft.errors.ConfigError`). Settings given next to a config object replace its fields.

Errors are sdft's own (:mod:`sdft.errors`): :class:`~sdft.errors.InputError` for bad data or
paths (naming the file, row and field), :class:`~sdft.errors.ConfigError` for bad settings,
:class:`~sdft.errors.SdftError` for runtime failures. Nothing prints: pass ``notice`` (one-line
messages, e.g. ``print``) and ``on_progress`` callbacks to see what happens.

``rewrite`` and ``replay`` write nothing unless ``output`` is given (they run the same resumable
runner in a temporary folder of their own, which they delete); ``train``, ``evaluate`` and
``compare`` write their run folder (``output_dir``, the CLI's defaults), since the model and the
report files are what they make.

Importing this module is cheap: torch, vLLM, transformers and datasets load when a function runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sdft.errors import ConfigError, InputError

if TYPE_CHECKING:
    import datasets

    from sdft.compare.run import CompareResult
    from sdft.engines import Engine
    from sdft.eval.run import EvalReport
    from sdft.pipeline import PipelineResult
    from sdft.train import TrainResult

__all__ = ["compare", "evaluate", "replay", "rewrite", "train"]

Notice = Callable[[str], None]
T = TypeVar("T")

#: What the in-memory rows of ``data`` are written to inside the temporary folder.
_INPUT_NAME = "input.jsonl"


# ---------------------------------------------------------------------------------------------
# rewrite and replay: datasets in, datasets out


def rewrite(data: Any, /, *, model: str | None = None, output: str | os.PathLike | None = None,
            engine: Engine | None = None, on_progress: Callable[..., None] | None = None,
            notice: Notice | None = None, **settings: Any) -> datasets.Dataset:
    """Rewrite each reference answer of ``data`` in the seed model's own words (``sdft rewrite``).

    Args:
        data: the rows: a ``datasets.Dataset``, a list of dicts, or a path (a ``.jsonl``/``.json``/
            ``.csv``/``.parquet`` file, a ``save_to_disk`` folder, a Hub name, ``example:arith``)
            in any format ``sdft rewrite`` reads (GSM8K, alpaca, prompt/response, chat messages);
            or a :class:`~sdft.rewrite.RewriteConfig`.
        model: the seed model (alias, HF folder, ``.gguf``, Hub id); default
            :data:`sdft.models.DEFAULT_MODEL`.
        output: where to keep the run (the training file, ``.records.jsonl``, ``.rejected.jsonl``,
            ``.manifest.json``), resumable and cached like the CLI's ``-o``. None: nothing is
            written; the run happens in a temporary folder that is deleted afterwards.
        engine: an already-loaded engine of ``model`` to reuse (see :func:`sdft.engines.load_engine`).
        on_progress: ``on_progress(done, total, **stats)`` as rows finish.
        notice: one-line notices (backend choice, resume, cache hits).
        **settings: any other :class:`~sdft.rewrite.RewriteConfig` field (``samples``, ``verifier``,
            ``select``, ``max_new_tokens``, ``data_format``, ``output_format``, ...).

    Returns:
        The kept rows as a ``datasets.Dataset``: the training columns of ``output_format``
        (``messages`` by default: the prompt and the kept answer) and an ``sdft`` column with each
        row's record (``id``, ``index``, ``status``, ``reason``, ``detail``, ``original``,
        ``source``, ``attempts``, ``passed``, ``chosen``, ``nll``, ... and ``extra``, the source
        row's other fields as JSON text; see docs/FORMATS.md). ``dataset.manifest`` holds the
        run's manifest (counts, acceptance, gap report, settings); it is a plain attribute, so
        ``map``/``filter`` results do not carry it.

    Raises:
        InputError: bad data (file, row and field named), or an ``output`` that is an input or
            holds files sdft did not write.
        ConfigError: invalid settings.
    """
    from sdft.rewrite import RewriteConfig, run_rewrite

    base, data = _split_config(data, RewriteConfig)
    with _workspace() as work:
        given = _given(model=model, output=None if output is None else str(output))
        if data is not None:
            given["input"] = _data_path(data, work)
        if output is None:
            given["output"] = str(work / "rewrite.jsonl")
        cfg = _config(RewriteConfig, base, {**given, **settings})
        result = run_rewrite(cfg, engine=engine, on_progress=on_progress, notice=notice)
        return _kept_dataset(result.output, result.manifest, cfg.output_format)


def replay(config: Any = None, /, *, model: str | None = None, output: str | os.PathLike | None = None,
           engine: Engine | None = None, on_progress: Callable[..., None] | None = None,
           notice: Notice | None = None, **settings: Any) -> datasets.Dataset:
    """Write self-generated replay rows: queries the model writes as a user, and its own answers.

    Args:
        config: a :class:`~sdft.replay.ReplayConfig`, or None to build one from the settings.
        model: the model that writes and answers (default :data:`sdft.models.DEFAULT_MODEL`).
        output: where to keep the run (as for :func:`rewrite`); None writes nothing.
        engine: an already-loaded engine of ``model`` to reuse.
        on_progress: ``on_progress(kept, num, **stats)`` after each batch.
        notice: one-line notices.
        **settings: any other :class:`~sdft.replay.ReplayConfig` field (``num``, ``batch_size``,
            ``refusals``, ``language``, ...).

    Returns:
        The kept replay rows as a ``datasets.Dataset`` with an ``sdft`` column and a
        ``manifest`` attribute, as :func:`rewrite` returns them.

    Raises:
        ConfigError: invalid settings, or a chat template the query prompt cannot be derived from.
        InputError: an ``output`` holding another run or files sdft did not write.
    """
    from sdft.replay import ReplayConfig, run_replay

    base, rest = _split_config(config, ReplayConfig)
    if rest is not None:
        raise ConfigError(f"replay takes a ReplayConfig or keyword settings, got {_kind(rest)}")
    with _workspace() as work:
        given = _given(model=model, output=None if output is None else str(output))
        if output is None:
            given["output"] = str(work / "replay.jsonl")
        cfg = _config(ReplayConfig, base, {**given, **settings})
        result = run_replay(cfg, engine=engine, on_progress=on_progress, notice=notice)
        return _kept_dataset(result.output, result.manifest, cfg.output_format)


# ---------------------------------------------------------------------------------------------
# train, evaluate, compare: run folders out


def train(data: Any = None, /, *, config: Any = None, model: str | None = None,
          output_dir: str | os.PathLike | None = None, on_progress: Callable[..., None] | None = None,
          notice: Notice | None = None, **settings: Any) -> PipelineResult | TrainResult:
    """Fine-tune the seed model on its own rewrites (SDFT) or on the original answers (``sdft train``).

    Two forms:

    * the whole pipeline, like ``sdft train``: ``train(data, model=..., output_dir=...,
      method="sdft", rewrite={...}, train={...}, eval={...}, replay=..., replay_ratio=...)``, or
      ``train(pipeline_config)``; rewrites (``method="sdft"``, cached), trains, and evaluates when
      ``eval`` is set. Returns a :class:`~sdft.pipeline.PipelineResult`.
    * training only, on the rows as they are: ``train(data, config=TrainConfig(...))`` or
      ``train(data, config=..., learning_rate=...)`` (settings: TrainConfig fields). ``data``
      may be the dataset :func:`rewrite` returned. Returns a :class:`~sdft.train.TrainResult`.

    Args:
        data: the task rows (a ``datasets.Dataset``, a list of dicts or a path, as for
            :func:`rewrite`), a mapping for the recipe's ``data`` section (``path``, ``format``,
            ``prompt_field``, ...), or a :class:`~sdft.pipeline.PipelineConfig`.
        config: a :class:`~sdft.pipeline.PipelineConfig` or a :class:`~sdft.train.TrainConfig`.
        model: the seed model (default :data:`sdft.models.DEFAULT_MODEL`).
        output_dir: the run folder (pipeline default ``runs/sdft``; TrainConfig's ``runs/train``).
        on_progress: pipeline: ``on_progress(stage, done, total, stats)`` with stage ``rewrite``
            or ``train``; training only: ``on_progress(step, total_steps, **stats)``.
        notice: one-line notices.
        **settings: the config's other fields.

    Raises:
        InputError: bad data; ConfigError: invalid settings (every problem at once).
    """
    from sdft.pipeline import PipelineConfig
    from sdft.train import TrainConfig

    if isinstance(data, (PipelineConfig, TrainConfig)):
        if config is not None:
            raise ConfigError("give the config once: train(config) or train(data, config=config)")
        data, config = None, data
    if config is not None and not isinstance(config, (PipelineConfig, TrainConfig)):
        raise ConfigError(f"train's config must be a PipelineConfig or a TrainConfig, got {_kind(config)}")
    given = _given(model=model, output_dir=None if output_dir is None else str(output_dir))
    with _workspace() as work:
        if isinstance(config, TrainConfig):
            return _train_only(data, config, {**given, **settings}, work, on_progress, notice)
        from sdft.pipeline import run_pipeline

        if data is not None:
            section = dict(data) if isinstance(data, Mapping) else {"path": _data_path(data, work)}
            if isinstance(data, Mapping) and "path" in section:
                section["path"] = _data_path(section["path"], work)
            old = dict(_as_dict(config).get("data") or {}) if config is not None else {}
            given["data"] = {**old, **section}
        cfg = _config(PipelineConfig, config, {**given, **settings})
        return run_pipeline(cfg, on_progress=on_progress, notice=notice)


def _train_only(data: Any, config: Any, settings: dict[str, Any], work: Path,
                on_progress: Callable[..., None] | None, notice: Notice | None) -> TrainResult:
    """``sdft.train.train`` on the rows of ``data`` (prompt and answer of each, as the reader sees them)."""
    from sdft.data import DataSpec, iter_examples
    from sdft.train import TrainConfig
    from sdft.train import train as run_train

    if data is None:
        raise InputError("train(data, config=TrainConfig(...)) needs the rows to train on: pass data")
    cfg = _config(TrainConfig, config, settings)
    pairs = [(ex.messages, ex.answer) for ex in iter_examples(DataSpec(path=_data_path(data, work)))]
    return run_train(cfg, pairs, on_progress=on_progress, notice=notice)


def evaluate(config: Any = None, /, *, base: str | None = None,
             tuned: str | list[str] | Mapping[str, str] | None = None,
             output_dir: str | os.PathLike | None = None, gate: bool = False,
             on_progress: Callable[[str, int, int], None] | None = None, notice: Notice | None = None,
             **settings: Any) -> EvalReport:
    """Score the base and tuned model(s) on the same probes with the same greedy decoding (``sdft eval``).

    Args:
        config: an :class:`~sdft.eval.config.EvalConfig`, or None to build one from the settings.
        base: the seed model (default :data:`sdft.models.DEFAULT_MODEL`).
        tuned: the tuned model(s): a model, a list of ``MODEL`` / ``NAME=MODEL``, or a mapping
            ``{name: model}``; a LoRA adapter folder is merged once (cached).
        output_dir: where ``report.json``, ``report.md``, ``radar.png``, ``answers.jsonl`` and the
            answer cache go (default ``runs/eval``).
        gate: raise :class:`~sdft.errors.GateFailed` when a suite dropped more than ``max_drop``
            (as the CLI's exit code 3); otherwise read ``report.gate_failures``.
        on_progress: ``on_progress(stage, done, total)``.
        notice: one-line notices.
        **settings: any other EvalConfig field (``suites``, ``limit``, ``data``, ``max_drop``, ...).

    Returns:
        The :class:`~sdft.eval.run.EvalReport`: ``path`` of ``report.json``, its ``data`` and the
        ``gate_failures``.

    Raises:
        ConfigError: invalid settings; InputError: a bad probe file or model path;
        GateFailed: with ``gate=True``, a suite dropped more than allowed.
    """
    from sdft.eval import EvalConfig, check_gate, run_eval

    cfg_in, rest = _split_config(config, EvalConfig)
    if rest is not None:
        raise ConfigError(f"evaluate takes an EvalConfig or keyword settings, got {_kind(rest)}")
    if isinstance(tuned, Mapping):
        tuned = [f"{name}={path}" for name, path in tuned.items()]
    elif isinstance(tuned, (str, os.PathLike)):
        tuned = [str(tuned)]
    given = _given(base=base, tuned=None if tuned is None else [str(t) for t in tuned],
                   output_dir=None if output_dir is None else str(output_dir))
    cfg = _config(EvalConfig, cfg_in, {**given, **settings})
    report = run_eval(cfg, on_progress=on_progress, notice=notice)
    if gate:
        check_gate(report)
    return report


def compare(config: Any = None, /, *, on_progress: Callable[..., None] | None = None, notice: Notice | None = None,
            **settings: Any) -> CompareResult:
    """Train several methods over several seeds and report task gain against forgetting (``sdft compare``).

    Args:
        config: a :class:`~sdft.compare.config.CompareConfig`; or a compare recipe name or YAML
            path (as ``sdft compare RECIPE`` takes it) that the settings override; or None, when
            the settings are the whole recipe.
        on_progress: ``on_progress(stage, done, total, stats)``.
        notice: one-line notices.
        **settings: recipe keys (``model``, ``data``, ``rewrite``, ``train``, ``eval``, ``compare``,
            ``methods``), merged over the recipe's. Shorthands as in the CLI's flags: ``methods``
            as a list (``["sft", "sdft"]``) and ``seeds``/``output_dir`` set the ``compare``
            section; ``methods`` as a mapping overrides the method presets.

    Returns:
        The :class:`~sdft.compare.run.CompareResult`: the run folder, the report, the units
        trained now and those already finished.

    Raises:
        ConfigError: every problem of the recipe at once; InputError: bad data.
    """
    from sdft.compare.config import CompareConfig, load_compare, load_compare_recipe
    from sdft.compare.run import run_compare
    from sdft.config import deep_merge

    if isinstance(config, CompareConfig):
        if settings:
            raise ConfigError("compare(CompareConfig) takes no settings: build the config with them, or pass the "
                              "recipe name and the settings")
        cfg = config
    else:
        if config is not None and not isinstance(config, (str, os.PathLike)):
            raise ConfigError(f"compare takes a CompareConfig, a recipe name or path, or settings; got {_kind(config)}")
        recipe, source, name = load_compare_recipe(str(config) if config is not None else None)
        section = {k: settings.pop(k) for k in ("seeds", "output_dir") if k in settings}
        if isinstance(settings.get("methods"), (list, tuple, str)):
            section["methods"] = settings.pop("methods")
        if section:
            settings["compare"] = {**(settings.get("compare") or {}), **section}
        cfg = load_compare(deep_merge(recipe, settings), source=source if config is not None else "settings",
                           output_dir=f"runs/compare-{name if config is not None else 'api'}")
    return run_compare(cfg, on_progress=on_progress, notice=notice)


# ---------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def _workspace() -> Iterator[Path]:
    """A fresh temporary folder for this call, deleted afterwards (it holds only what the call wrote)."""
    folder = Path(tempfile.mkdtemp(prefix="sdft-api-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # mkdtemp made it for this call alone: all of it is ours


def _given(**values: Any) -> dict[str, Any]:
    """The explicit keyword arguments that were given (None means "not given")."""
    return {k: v for k, v in values.items() if v is not None}


def _kind(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _as_dict(config: Any) -> dict[str, Any]:
    from sdft.config import to_dict

    return to_dict(config)


def _split_config(value: Any, cls: type) -> tuple[Any, Any]:
    """``(config, None)`` when ``value`` is a ``cls`` instance, else ``(None, value)``."""
    return (value, None) if isinstance(value, cls) else (None, value)


def _config(cls: type[T], base: T | None, settings: dict[str, Any]) -> T:
    """``base`` with ``settings`` replacing its fields (or ``cls`` built from them), validated like a recipe."""
    from sdft.config import from_dict

    if base is not None and not settings:
        return base
    fields = _as_dict(base) if base is not None else {}
    return from_dict(cls, {**fields, **settings}, source="keyword settings")


def _data_path(data: Any, work: Path) -> str:
    """A path the reader takes for ``data``: itself when it is one, else its rows written to ``work``."""
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    if isinstance(data, Mapping):
        raise InputError("data: got one row (a mapping); expected a list of rows, a datasets.Dataset or a path")
    if not isinstance(data, Iterable):
        raise InputError(f"data: expected a datasets.Dataset, a list of dicts or a path, got {_kind(data)}")
    return str(_write_rows(data, work / _INPUT_NAME))


def _write_rows(rows: Iterable[Any], path: Path) -> Path:
    """Write in-memory rows as JSON Lines for the runner (which fingerprints and reads a file)."""
    from sdft.data import jsonable_row

    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for n, row in enumerate(rows, 1):
            fh.write(json.dumps(jsonable_row(row, f"data: row {n}"), ensure_ascii=False) + "\n")
    if n == 0:
        raise InputError("data: no rows; expected at least one row")
    return path


def _record_view(record: dict[str, Any]) -> dict[str, Any]:
    """The ``sdft`` column of a kept row: its record without the training columns and candidates.

    ``extra`` (the source row's other fields) becomes JSON text: its values may differ in type
    from row to row, which a datasets column cannot hold.
    """
    view = {k: v for k, v in record.items() if k not in ("messages", "response", "candidates", "extra")}
    view["extra"] = json.dumps(record.get("extra") or {}, ensure_ascii=False)
    return view


def _kept_dataset(output: Path, manifest: dict[str, Any], output_format: str) -> datasets.Dataset:
    """The kept rows of a finished output as a Dataset: training columns + ``sdft`` + ``.manifest``."""
    import datasets

    from sdft.formats import to_training_row
    from sdft.store import iter_kept

    rows = [{**to_training_row(r, output_format), "sdft": _record_view(r)} for r in iter_kept(output)]
    if rows:
        ds = datasets.Dataset.from_list(rows)
    else:  # every row dropped: the same columns, no rows
        shape = to_training_row({"messages": [{"role": "user", "content": ""}], "response": ""}, output_format)
        ds = datasets.Dataset.from_dict({**{k: [] for k in shape}, "sdft": []})
    ds.manifest = manifest
    return ds
