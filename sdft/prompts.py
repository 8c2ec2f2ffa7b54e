"""Prompts: the rewrite prompt sent to the seed model, and chat-template tokenisation.

The *rewrite prompt* is only for generation: by default the model's own chat template, a system
instruction to answer in its own words with the reference answer as a guide, and the question
plus reference answer in the user turn. The *training prompt* stays the original conversation
(:attr:`sdft.data.Example.messages`).

:func:`encode_pair` is the single place where a (prompt, answer) pair becomes token ids; the
trainer uses it for loss masking and the engines use it for NLL scoring, so "the tokens we
score" and "the tokens we train on" are the same by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdft.data import Example
from sdft.errors import InputError

DEFAULT_SYSTEM = (
    "You are a helpful assistant. You will be given a question and a reference answer. "
    "Answer the question yourself, in your own words and your usual style, reaching the same "
    "final result as the reference answer. Use the reference answer only as a guide: do not "
    "copy it, do not mention it, and do not comment on the task. Reply with the answer only."
)

DEFAULT_USER = "{{ question }}\n\nReference answer:\n{{ answer }}"

# The paper's Alpaca-format rewrite prompt style (Yang et al., 2024), paraphrased in our own
# words: a plain-text instruction block, with the reference shown after the task.
PAPER_USER = (
    "Below is an instruction that describes a task, together with a reference answer. "
    "Write a response that completes the request, in your own words.\n\n"
    "### Instruction:\n{{ question }}\n\n### Reference answer:\n{{ answer }}\n\n### Response:"
)


@dataclass(frozen=True)
class RewritePrompt:
    """How the rewrite request is built.

    Attributes:
        system: system turn (None: no system turn, the chat template's own default applies).
        user_template: Jinja template of the user turn; variables: ``question`` (last user
            turn), ``answer`` (reference), ``messages`` (the context turns), ``extra`` (row fields).
        keep_context: keep earlier turns of multi-turn rows before the rewrite request.
    """

    system: str | None = DEFAULT_SYSTEM
    user_template: str = DEFAULT_USER
    keep_context: bool = True

    @classmethod
    def from_file(cls, path: str | Path, system: str | None = DEFAULT_SYSTEM) -> RewritePrompt:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"template file not found: {p}")
        text = p.read_text(encoding="utf-8")
        _compile(text, str(p))
        return cls(system=system, user_template=text)

    @classmethod
    def paper(cls) -> RewritePrompt:
        return cls(system=None, user_template=PAPER_USER)

    def build(self, ex: Example) -> list[dict[str, str]]:
        """The chat messages that ask the seed model to rewrite ``ex.answer``."""
        tpl = _compile(self.user_template, "template")
        user = tpl.render(question=ex.question, answer=ex.answer, messages=ex.messages, extra=ex.extra)
        context = [m for m in ex.messages[:-1] if m["role"] != "system"] if self.keep_context else []
        system = [{"role": "system", "content": self.system}] if self.system else []
        if not self.system and ex.messages[0]["role"] == "system":
            system = [ex.messages[0]]
        return [*system, *context, {"role": "user", "content": user}]


_TEMPLATE_CACHE: dict[str, Any] = {}


def _compile(text: str, where: str) -> Any:
    if text not in _TEMPLATE_CACHE:
        import jinja2

        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
        try:
            _TEMPLATE_CACHE[text] = env.from_string(text)
        except jinja2.TemplateSyntaxError as e:
            raise InputError(f"{where}: line {e.lineno}: Jinja syntax error: {e.message}") from None
    return _TEMPLATE_CACHE[text]


# ---------------------------------------------------------------------------------------------
# chat-template rendering and tokenisation (tokenizer is a transformers tokenizer)


def render_chat(tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
    """Render ``messages`` with the tokenizer's chat template (ChatML when it has none)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def encode_prompt(tokenizer: Any, prompt: list[dict[str, str]] | str) -> list[int]:
    """Token ids of a chat prompt (template applied, generation header added) or a raw string."""
    # Raw prompts are sent exactly as given (no BOS added): a Magpie pre-query prompt already
    # carries whatever the chat template puts at the start.
    text = prompt if isinstance(prompt, str) else render_chat(tokenizer, prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_pair(tokenizer: Any, messages: list[dict[str, str]], answer: str) -> tuple[list[int], list[int]]:
    """Token ids of a chat prompt and of the assistant answer that follows it.

    The answer ids are exactly what the chat template renders for the assistant turn,
    end-of-turn marker included, so that training on them teaches the model to stop.
    """
    prompt_text = render_chat(tokenizer, messages, add_generation_prompt=True)
    full_text = render_chat(tokenizer, [*messages, {"role": "assistant", "content": answer}],
                            add_generation_prompt=False)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    if full_text.startswith(prompt_text):
        answer_ids = tokenizer(full_text[len(prompt_text):], add_special_tokens=False)["input_ids"]
    else:  # templates that re-render earlier turns differently once an answer follows
        eos = tokenizer.eos_token or ""
        answer_ids = tokenizer(answer + eos, add_special_tokens=False)["input_ids"]
    return prompt_ids, answer_ids
