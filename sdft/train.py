"""The bundled SFT trainer: chat-template rendering, assistant-only loss, LoRA or full.

Built on ``transformers.Trainer`` so that accelerate, DeepSpeed and FSDP come from existing
engines: ``sdft train`` runs unchanged under ``accelerate launch`` / ``torchrun``.

:func:`train` runs five steps, each a function below:

1. **run/resume** (:func:`_finished_run`, :func:`last_complete_checkpoint`): a finished run of
   the same config and data is reused without loading anything; otherwise training resumes from
   the last complete ``checkpoint-*`` in ``output_dir`` (``overwrite`` starts fresh).
2. **data** (:func:`build_rows`): each example is (training prompt messages, answer).
   :func:`sdft.prompts.encode_pair` turns it into token ids with the model's own chat template;
   prompt tokens get label -100, so only the assistant turn (end-of-turn marker included) is
   trained. Over-long examples keep their prompt and lose the end of the answer; examples whose
   prompt alone fills ``max_length`` are dropped. Both are reported (notice and metrics), and a
   run where more than half of the examples would lose their whole answer is refused.
   ``packing`` concatenates examples into rows of ``max_length`` with ``position_ids`` that
   restart at 0 for each example and no attention mask: transformers then builds a
   block-diagonal causal mask from the position ids, so packed examples never attend to each
   other.
3. **load** (:func:`load_model`): the model in the resolved dtype, LoRA-wrapped through peft.
4. **trainer** (:func:`training_arguments`, :func:`build_trainer`): ``TrainingArguments`` from
   the :class:`TrainConfig`; ``loss_type="dft"`` swaps the token-mean cross-entropy for
   :func:`dft_loss`; ``report_to`` reaches the Trainer's tracker callbacks.
5. **save/merge** (:func:`save_outputs`, :func:`collect_metrics`): ``final/`` (the adapter, or
   the full model) and, with ``merge``, ``merged/`` (a plain full model that vLLM loads
   directly, through :func:`sdft.models.merge_adapter` for LoRA), plus ``train_metrics.json``
   and ``loss_curve.png``.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sdft import dist
from sdft.config import DType, check_literals, model_field, to_dict
from sdft.errors import ConfigError
from sdft.models import merge_adapter, resolve_model, save_model_dir
from sdft.tracking import check_trackers, parse_report_to

ProgressCb = Callable[..., None]
Pair = tuple[list[dict[str, str]], str]

LOSS_TYPES = ("nll", "dft")
LossType = Literal[LOSS_TYPES]  # type: ignore[valid-type]
# Refuse a run where more than this share of the examples would lose their whole answer
# (prompt alone >= max_length): it would train on a fraction of the data the user meant.
MAX_LOST_SHARE = 0.5


@dataclass
class TrainConfig:
    """Fine-tuning settings (a recipe's ``train`` section, or ``sdft train`` flags)."""

    model: str = model_field("model to fine-tune")
    output_dir: str = field(default="runs/train", metadata={"help": "checkpoints, final/, merged/, metrics"})
    finetune: Literal["lora", "full"] = field(default="lora", metadata={
        "help": "LoRA adapters (peft) or full fine-tuning"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (the paper: 8)"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                           metadata={"help": "modules to adapt (the paper: q_proj, v_proj)"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the data"})
    max_steps: int = field(default=-1, metadata={"help": "stop after N optimizer steps (-1: use epochs)"})
    per_device_batch_size: int = field(default=4, metadata={"help": "examples per device per step"})
    gradient_accumulation_steps: int = field(default=2, metadata={"help": "micro-batches per optimizer step"})
    lr_scheduler: str = field(default="cosine", metadata={"help": "cosine | linear | constant | ..."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "share of steps for warm-up"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_length: int = field(default=1024, metadata={"help": "tokens per example; longer answers are cut"})
    packing: bool = field(default=False, metadata={"help": "pack examples into full rows (no cross-attention)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory"})
    system_prompt: str | None = field(default=None, metadata={"help": "system turn added to every example"})
    seed: int = field(default=0, metadata={"help": "data order and init seed"})
    logging_steps: int = field(default=1, metadata={"help": "log every N steps"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every N steps (resume point)"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept"})
    merge: bool = field(default=True, metadata={"help": "also save merged/, a full model vLLM can load"})
    overwrite: bool = field(default=False, metadata={"help": "start fresh instead of resuming"})
    dtype: DType = field(default="auto", metadata={"help": "training dtype: auto (bf16 on capable GPUs, else "
                                                           "fp32), float32, bfloat16 or float16"})
    loss_type: LossType = field(default="nll", metadata={"help": "nll (token-mean cross-entropy) | dft (each token's "
                                                             "cross-entropy times its detached probability)"})
    report_to: str = field(default="none", metadata={"help": "none, or a comma list of tensorboard, wandb, mlflow"})

    def __post_init__(self) -> None:
        problems = check_literals(self)
        for name in ("lora_r", "lora_alpha", "per_device_batch_size", "gradient_accumulation_steps", "max_length",
                     "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.learning_rate <= 0:
            problems.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.max_steps < 1 and self.epochs <= 0:
            problems.append("set epochs > 0 or max_steps >= 1")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.finetune == "lora" and not self.lora_target_modules:
            problems.append("lora_target_modules is empty")
        try:
            parse_report_to(self.report_to)
        except ConfigError as e:
            problems.extend(e.problems)
        if problems:
            raise ConfigError(problems)


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path
    merged_dir: Path | None
    metrics: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# data: tokenisation, context-length report, packing, collation


def tokenize_pairs(tokenizer: Any, pairs: Iterable[Pair], max_length: int, system_prompt: str | None = None, *,
                   lengths: list[tuple[int, int]] | None = None) -> tuple[list[dict[str, list[int]]], dict[str, int]]:
    """Token ids and labels (prompt masked with -100) for every (messages, answer) pair.

    Args:
        lengths: when given, (prompt tokens, answer tokens) of every pair, before any cut, are
            appended to it (for :func:`context_report`).

    Returns:
        The examples and counts: ``examples``, ``truncated`` (answer cut), ``dropped`` (prompt
        alone too long), ``answer_tokens``.
    """
    from sdft.prompts import encode_pair

    out: list[dict[str, list[int]]] = []
    stats = {"examples": 0, "truncated": 0, "dropped": 0, "answer_tokens": 0}
    for messages, answer in pairs:
        if system_prompt and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system_prompt}, *messages]
        p_ids, a_ids = encode_pair(tokenizer, messages, answer)
        if lengths is not None:
            lengths.append((len(p_ids), len(a_ids)))
        if len(p_ids) >= max_length:
            stats["dropped"] += 1
            continue
        if len(p_ids) + len(a_ids) > max_length:
            a_ids = a_ids[: max_length - len(p_ids)]
            stats["truncated"] += 1
        out.append({"input_ids": p_ids + a_ids, "labels": [-100] * len(p_ids) + a_ids})
        stats["examples"] += 1
        stats["answer_tokens"] += len(a_ids)
    return out, stats


def context_report(lengths: list[tuple[int, int]], max_length: int) -> dict[str, Any]:
    """What ``max_length`` does to the data: examples cut or dropped, answer tokens lost, and the
    ``max_length`` that would keep 95% / all of the examples whole."""
    totals = sorted(p + a for p, a in lengths)
    n = len(lengths)
    cut = [(p, a) for p, a in lengths if p < max_length < p + a]
    return {
        "max_length": max_length, "examples": n,
        "truncated": len(cut), "dropped": sum(1 for p, _ in lengths if p >= max_length),
        "answer_tokens": sum(a for _, a in lengths),
        "answer_tokens_lost": sum(p + a - max_length for p, a in cut) + sum(a for p, a in lengths if p >= max_length),
        "longest": totals[-1] if totals else 0,
        "p95": totals[min(n - 1, math.ceil(0.95 * n) - 1)] if totals else 0,
    }


def check_context(report: dict[str, Any], say: Callable[[str], None]) -> None:
    """Notice cut or dropped examples; refuse when most examples would lose their whole answer.

    Raises:
        ConfigError: no example left, or more than :data:`MAX_LOST_SHARE` of them dropped.
    """
    n, dropped, cut, limit = report["examples"], report["dropped"], report["truncated"], report["max_length"]
    fix = (f"raise train.max_length to {report['p95']} (95% of the examples fit) or {report['longest']} (all fit), "
           f"or shorten the prompts / train.system_prompt")
    if n and (dropped == n or dropped > MAX_LOST_SHARE * n):
        raise ConfigError(f"train.max_length={limit}: {dropped} of {n} examples ({dropped / n:.0%}) have a prompt "
                          f"of {limit}+ tokens and would lose their whole answer; {fix}")
    if not n:
        raise ConfigError("no training examples (the dataset is empty)")
    if cut or dropped:
        say(f"train.max_length={limit}: {cut} of {n} answers cut ({report['answer_tokens_lost']} of "
            f"{report['answer_tokens']} answer tokens lost), {dropped} examples dropped (prompt alone too long); "
            f"to keep them whole {fix}")


def build_rows(tokenizer: Any, pairs: list[Pair], config: TrainConfig,
               say: Callable[[str], None]) -> tuple[list[dict[str, list[int]]], dict[str, int], dict[str, Any]]:
    """Training rows (packed when ``config.packing``), the tokenisation counts and the context report."""
    lengths: list[tuple[int, int]] = []
    examples, stats = tokenize_pairs(tokenizer, pairs, config.max_length, config.system_prompt, lengths=lengths)
    context = context_report(lengths, config.max_length)
    check_context(context, say)
    rows = pack(examples, config.max_length) if config.packing else examples
    return rows, stats, context


def pack(examples: list[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """Greedy first-fit packing into rows of at most ``max_length`` tokens, with per-example
    ``position_ids`` restarting at 0 (the boundary marker transformers uses for packed masks)."""
    rows: list[dict[str, list[int]]] = []
    cur: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": []}
    for ex in examples:
        n = len(ex["input_ids"])
        if cur["input_ids"] and len(cur["input_ids"]) + n > max_length:
            rows.append(cur)
            cur = {"input_ids": [], "labels": [], "position_ids": []}
        cur["input_ids"] += ex["input_ids"]
        # the first token of each example must not be predicted from the previous example
        cur["labels"] += [-100] + ex["labels"][1:]
        cur["position_ids"] += list(range(n))
    if cur["input_ids"]:
        rows.append(cur)
    return rows


class Collator:
    """Right-pads a batch; labels pad with -100. Packed rows carry ``position_ids`` and no mask."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        packed = "position_ids" in batch[0]
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        out: dict[str, Any] = {}
        if packed:
            pos = torch.zeros((len(batch), width), dtype=torch.long)
        else:
            mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            if packed:
                pos[i, :n] = torch.tensor(b["position_ids"])
                pos[i, n:] = torch.arange(width - n)  # padding forms its own (label-free) sequence
            else:
                mask[i, :n] = 1
        out.update(input_ids=ids, labels=labels)
        if packed:
            out["position_ids"] = pos
        else:
            out["attention_mask"] = mask
        return out


# ---------------------------------------------------------------------------------------------
# loss


def dft_loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
    """Dynamic Fine-Tuning loss (Wu et al. 2025, "On the Generalization of SFT: A Reinforcement
    Learning Perspective with Reward Rectification"; TRL's ``SFTConfig(loss_type="dft")``).

    Each supervised token's cross-entropy ``-log p`` is multiplied by ``p``, the probability the
    model gives that token, detached (a weight, not a path for gradients). Reduction as TRL's
    ``dft_loss`` and transformers' own causal-LM loss: labels are shifted by one, the weighted
    terms are summed and divided by ``num_items_in_batch`` (the supervised tokens of the whole
    gradient-accumulation batch, as counted by the Trainer), or by this batch's supervised tokens
    when it is None (at least 1). So with ``p`` frozen at 1 it is exactly the ``nll`` loss. The
    Trainer multiplies it by the number of processes when it averages token counts over ranks,
    as it does for the built-in loss (TRL's SFTTrainer does the same).

    Memory: one ``cross_entropy(reduction="none")`` over the fp32 logits, as the built-in loss
    does; the probability is ``exp(-ce)`` of that per-token result, so no second full-vocabulary
    tensor (softmax) is built. Where it differs from TRL (1.16): TRL gets the same per-token
    log-probs from its fused, chunked LM head, which never builds the whole logits tensor; this
    one uses the model's ordinary head, so DFT costs exactly what ``nll`` costs here.
    """
    import torch
    import torch.nn.functional as F

    logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
    labels = F.pad(labels, (0, 1), value=-100)[..., 1:].to(logits.device)  # token t predicts label t+1
    ce = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100,
                         reduction="none")  # 0 at ignored positions
    per_token = ce * (-ce).exp().detach()
    if num_items_in_batch is None:
        num_items_in_batch = (labels != -100).sum()
    # a batch without supervised tokens gives 0, not 0/0 (as TRL)
    return per_token.sum() / torch.as_tensor(num_items_in_batch, device=per_token.device).clamp(min=1)


# ---------------------------------------------------------------------------------------------
# checks that need only the model's config (no weights)


def module_names(model_path: str) -> set[str]:
    """Leaf module names (e.g. ``q_proj``) of a model, built on the meta device (no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(cfg)
    return {name.rsplit(".", 1)[-1] for name, mod in skeleton.named_modules() if name and not list(mod.children())}


def check_lora_targets(model_path: str, targets: list[str]) -> list[str]:
    """Problems with LoRA target modules (empty when all exist)."""
    names = module_names(model_path)
    linear = sorted(n for n in names if n.endswith("proj") or n in ("fc1", "fc2", "c_attn", "c_proj", "lm_head"))
    return [f"train.lora_target_modules: '{t}' is not a module of {model_path} (has: {', '.join(linear)})"
            for t in targets if t not in names]


# ---------------------------------------------------------------------------------------------
# run / resume


def last_complete_checkpoint(out: Path) -> str | None:
    """The newest ``checkpoint-N`` that was fully written.

    A crash or ``kill -9`` during a save leaves a checkpoint folder without its
    ``trainer_state.json`` (written last); resuming from it would fail, so it is skipped.
    """
    if not out.is_dir():
        return None
    steps = sorted((int(p.name.split("-")[1]), p) for p in out.glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-")[1].isdigit())
    for _, p in reversed(steps):
        if (p / "trainer_state.json").exists():
            return str(p)
    return None


def data_hash(pairs: list[Pair]) -> str:
    """A short content hash of the training pairs (a finished run is reused only for the same data)."""
    return hashlib.sha256(json.dumps(pairs, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def _finished_run(out: Path, config: TrainConfig, digest: str) -> dict[str, Any] | None:
    """The metrics of a finished run of this exact config and data in ``out``, else None.

    (Resuming from the last checkpoint of a finished ``max_steps`` run would make transformers
    train one step more; and a finished run needs no model load at all.)
    """
    metrics_file = out / "train_metrics.json"
    if config.overwrite or not metrics_file.is_file() or not (out / "final").is_dir():
        return None
    if config.merge and not (out / "merged" / "config.json").is_file():
        return None
    try:
        metrics = json.loads(metrics_file.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if metrics.get("data_hash") != digest or metrics.get("config") != json.loads(json.dumps(to_dict(config))):
        return None
    return metrics


def _clear_outputs(out: Path) -> None:
    """Remove what an earlier run wrote in ``out`` (checkpoints, final/, merged/, metrics, curve)."""
    for p in out.glob("checkpoint-*"):
        shutil.rmtree(p, ignore_errors=True)
    for name in ("final", "merged", "train_metrics.json", "loss_curve.png"):
        q = out / name
        shutil.rmtree(q, ignore_errors=True) if q.is_dir() else q.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# load


def load_model(model_path: str, config: TrainConfig) -> Any:
    """The model to train, in ``config.dtype``, LoRA-wrapped for ``finetune: lora``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dist.torch_dtype(config.dtype))
    # No KV cache in training: it is useless there, and transformers only derives the packed
    # (block-diagonal) mask from position_ids when no cache object exists.
    model.config.use_cache = False
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if config.finetune == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_target_modules), task_type="CAUSAL_LM"))
        if config.gradient_checkpointing:
            model.enable_input_require_grads()
    return model


# ---------------------------------------------------------------------------------------------
# trainer


def training_arguments(config: TrainConfig, out: Path) -> Any:
    """``transformers.TrainingArguments`` for ``config``, writing checkpoints into ``out``."""
    from transformers import TrainingArguments

    cuda = dist.cuda_available()
    cpu_ddp = dist.cpu_ddp(cuda=cuda)
    return TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float < 1 is a ratio of the total steps
        weight_decay=config.weight_decay,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        report_to=parse_report_to(config.report_to) or "none",
        dataloader_pin_memory=cuda,  # pinning only helps host-to-GPU copies
        bf16=cuda and dist.resolve_dtype(config.dtype, cuda=cuda) == "bfloat16",
        remove_unused_columns=False,
        # tokens/s counts real tokens, not padding (packed rows carry no mask but are nearly full)
        include_num_input_tokens_seen="all" if config.packing else "non_padding",
        ddp_backend="gloo" if cpu_ddp else None,
        use_cpu=cpu_ddp,  # see dist.cpu_ddp: without it the CPU ranks would not all-reduce
        disable_tqdm=True,
        save_only_model=False,
    )


class ProgressLog:
    """Collects the loss log and forwards each log to ``on_progress`` (a transformers callback)."""

    def __init__(self, on_progress: ProgressCb | None):
        self.on_progress = on_progress
        self.log: list[dict[str, Any]] = []
        self.t_start = time.time()
        self.t_end: float | None = None  # end of training (saving and merging are not training time)
        self.tokens_at_start = 0  # tokens seen before this run (a resumed run counts only its own for tokens/s)

    def callback(self) -> Any:
        from transformers import TrainerCallback

        outer = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001 - transformers' signature
                outer.tokens_at_start = state.num_input_tokens_seen or 0

            def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001 - transformers' signature
                if logs and "loss" in logs:
                    outer.record(state, logs)

            def on_train_end(self, args, state, control, **kw):  # noqa: ANN001 - transformers' signature
                outer.t_end = time.time()

        return _Callback()

    def record(self, state: Any, logs: dict[str, Any]) -> None:
        elapsed = max(time.time() - self.t_start, 1e-6)
        seen = (state.num_input_tokens_seen or 0) - self.tokens_at_start
        tok_s = seen / elapsed if seen else None
        self.log.append({"step": state.global_step, "loss": logs["loss"], "lr": logs.get("learning_rate"),
                         "tokens_seen": state.num_input_tokens_seen})
        if self.on_progress:
            self.on_progress(state.global_step, state.max_steps, loss=round(float(logs["loss"]), 4),
                             lr=f"{logs.get('learning_rate', 0):.2e}", tok_s=round(tok_s) if tok_s else None)


def build_trainer(model: Any, config: TrainConfig, out: Path, rows: list[dict[str, list[int]]], pad_id: int,
                  progress: ProgressLog) -> Any:
    """The ``transformers.Trainer``: our collator, our progress callback, and the configured loss.

    ``loss_type="nll"`` leaves the model's own causal-LM loss in place (unchanged behaviour);
    ``"dft"`` passes :func:`dft_loss` as ``compute_loss_func``, which the Trainer calls with the
    token count of the whole accumulated batch, and scales across ranks, as it does for the
    built-in loss.
    """
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback

    trainer = Trainer(model=model, args=training_arguments(config, out), train_dataset=rows,
                      data_collator=Collator(pad_id), callbacks=[progress.callback()],
                      compute_loss_func=dft_loss if config.loss_type == "dft" else None)
    trainer.remove_callback(PrinterCallback)  # progress goes through on_progress, not raw dict prints
    return trainer


# ---------------------------------------------------------------------------------------------
# save / merge


def _sharded(trainer: Any) -> bool:
    """True when DeepSpeed ZeRO-3 or FSDP holds the weights split over the ranks."""
    ds_plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return bool(trainer.is_fsdp_enabled or (trainer.is_deepspeed_enabled and getattr(ds_plugin, "zero_stage", 0) == 3))


def save_outputs(trainer: Any, tokenizer: Any, config: TrainConfig, model_path: str,
                 out: Path) -> tuple[Path, Path | None]:
    """Save ``final/`` and (with ``merge``) ``merged/``; every rank calls it, the main one writes.

    DeepSpeed ZeRO-3 and FSDP shard the weights over the ranks: gathering them is collective, so
    every rank calls ``save_model`` (only the main process writes), and ``merged/`` is then
    rebuilt from ``final/`` on disk.
    """
    final = out / "final"
    merged = out / "merged" if config.merge else None
    sharded = _sharded(trainer)
    if sharded:
        trainer.save_model(str(final))
    if not trainer.is_world_process_zero():
        return final, merged
    if not sharded:
        trainer.model.save_pretrained(str(final))
    tokenizer.save_pretrained(str(final))
    if merged is None:
        return final, merged
    if trainer.is_deepspeed_enabled:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()  # training is over: load plainly, not partitioned by ZeRO-3 (a collective)
    if config.finetune == "lora":
        merge_adapter(final, merged, base=model_path, dtype=config.dtype)
    else:
        if sharded:
            from transformers import AutoModelForCausalLM

            full = AutoModelForCausalLM.from_pretrained(str(final), dtype=dist.torch_dtype(config.dtype))
        else:
            full = trainer.model
        full.config.use_cache = True
        save_model_dir(full, tokenizer, merged)
    return final, merged


def collect_metrics(trainer: Any, result: Any, progress: ProgressLog, config: TrainConfig, **facts: Any) -> dict:
    """``train_metrics.json``: steps, losses, speed, data counts, the config and ``facts``."""
    history = [h for h in trainer.state.log_history if "loss" in h]
    tokens = trainer.state.num_input_tokens_seen
    runtime = (progress.t_end or time.time()) - progress.t_start
    log = progress.log
    return {
        "model": config.model, "model_path": facts.pop("model_path"), "finetune": config.finetune,
        "loss_type": config.loss_type, "global_step": trainer.state.global_step,
        "resumed_from": facts.pop("resumed_from"), "first_step_this_run": log[0]["step"] if log else None,
        # a run resumed from a finished checkpoint trains no step: no loss or speed of its own
        "train_loss": result.training_loss if log else None,
        "final_loss": history[-1]["loss"] if history else None,
        "runtime_seconds": round(runtime, 2), "tokens_seen": tokens,
        "tokens_per_second": round((tokens - progress.tokens_at_start) / runtime, 1)
        if runtime and log and tokens else None,
        "packing": config.packing, "world_size": dist.world_size(),
        "distributed_type": str(trainer.accelerator.distributed_type.value),
        "log_history": history, "config": to_dict(config), **facts,
    }


def _loss_curve(history: list[dict[str, Any]], path: Path) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker="o", markersize=2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("sdft train")
    ax.grid(alpha=0.3)
    if any(h["loss"] > 0 for h in history) and max(h["loss"] for h in history) / max(
            min(h["loss"] for h in history), 1e-9) > 20:
        ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# the whole run


def train(config: TrainConfig, pairs: Iterable[Pair], *, on_progress: ProgressCb | None = None,
          notice: Callable[[str], None] | None = None, extra_metrics: dict[str, Any] | None = None) -> TrainResult:
    """Fine-tune ``config.model`` on (messages, answer) pairs.

    Args:
        config: the training settings.
        pairs: (training prompt messages, answer) for every example.
        on_progress: ``on_progress(step, total_steps, loss=..., lr=..., tok_s=...)`` at each log.
        notice: one-line notices (resume, truncation).
        extra_metrics: merged into ``train_metrics.json`` (e.g. the pipeline's data provenance).

    Returns:
        Paths of ``final/`` and ``merged/`` and the metrics written to ``train_metrics.json``
        (empty on ranks other than the main one).

    Raises:
        ConfigError: bad LoRA targets, or ``max_length`` too short for most examples.
        MissingDependency: a tracker in ``report_to`` is not installed.
    """
    say = notice or (lambda _m: None)
    out = Path(config.output_dir)
    pairs = list(pairs)
    digest = data_hash(pairs)
    done = _finished_run(out, config, digest)
    if done is not None:  # same config, same data, final (and merged) saved: nothing to train
        say(f"{out} already holds this training run (same config and data): reusing it (pass overwrite to redo)")
        return TrainResult(out, out / "final", out / "merged" if config.merge else None, done)
    check_trackers(config.report_to, "train.report_to")
    model_path = resolve_model(config.model, log=say)
    if config.finetune == "lora":
        problems = check_lora_targets(model_path, config.lora_target_modules)
        if problems:
            raise ConfigError(problems)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows, stats, context = build_rows(tokenizer, pairs, config, say)  # refuses before any weights load

    if config.overwrite and out.exists() and dist.is_main():
        _clear_outputs(out)
    resume = None if config.overwrite else last_complete_checkpoint(out)
    if resume:
        say(f"resuming from {resume}")
    model = load_model(model_path, config)
    progress = ProgressLog(on_progress)
    trainer = build_trainer(model, config, out, rows, pad_id, progress)
    result = trainer.train(resume_from_checkpoint=resume)
    final, merged = save_outputs(trainer, tokenizer, config, model_path, out)
    metrics: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        metrics = collect_metrics(trainer, result, progress, config, model_path=model_path, resumed_from=resume,
                                  data=stats, context=context, rows=len(rows), data_hash=digest,
                                  **(extra_metrics or {}))
        (out / "train_metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
        _loss_curve(metrics["log_history"], out / "loss_curve.png")
    return TrainResult(out, final, merged, metrics)


def total_steps_hint(n_examples: int, config: TrainConfig, world: int = 1) -> int:
    """Optimizer steps a run will take (for progress bars before the Trainer exists)."""
    if config.max_steps > 0:
        return config.max_steps
    per_step = config.per_device_batch_size * config.gradient_accumulation_steps * world
    return max(1, math.ceil(n_examples / per_step * config.epochs))
