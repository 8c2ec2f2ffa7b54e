"""Quality filters for self-generated replay rows (``sdft replay``).

Every filter is a pure function of the text (plus a few settings) that returns the name of the
failed check or None. :func:`check_query` and :func:`check_answer` run the checks in a fixed
order and report the *first* failure, so each dropped row is counted under exactly one reason
and the counts in the manifest sum to the number of attempts.

Refusals are part of the model's alignment and are kept in the share the model produces them:
duplicates are found on the *queries* only (two identical refusals to two different requests
are both kept), refusals are exempt from the minimum answer length, and :func:`keep_refusal`
stops them from being over-represented among the kept rows. Near duplicates use
character (or word) n-gram shingles of the normalised text, a MinHash signature and LSH banding to find candidates,
then the exact Jaccard similarity of the shingle sets decides; there is no network model.
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

QUERY_CHECKS: tuple[str, ...] = (
    "empty", "truncated", "too-short", "too-long", "template-leakage", "not-a-question", "language",
    "exact-duplicate", "near-duplicate",
)
ANSWER_CHECKS: tuple[str, ...] = (
    "answer-empty", "answer-truncated", "answer-too-short", "answer-too-long", "answer-leakage",
    "answer-language", "refusal",
)
#: Every reason a replay row can carry, in the order the checks run. "excess-refusal": a refusal
#: that would push the refusal share of the kept rows above the share among all answers
#: (``refusals="proportional"``); "ok" is a kept row; "surplus" passed every check but came
#: after the requested number of rows.
REASONS: tuple[str, ...] = (*QUERY_CHECKS, *ANSWER_CHECKS, "excess-refusal", "surplus", "ok")

LANGUAGES = ("en",)
REFUSAL_MODES = ("proportional", "keep", "drop")

# Chat-template markup of common model families. A query or answer containing one of these
# is the template leaking into the text, not something a user would write.
GENERIC_MARKERS: tuple[str, ...] = (
    "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>", "<|endoftext|>", "<start_of_turn>", "<end_of_turn>", "[INST]", "[/INST]", "<<SYS>>",
    "<</SYS>>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "### Instruction:", "### Response:",
)

# A role name alone on a line ("assistant", "User:") is a chat header whose special tokens were
# stripped on decoding: the model went on to write the next turn itself.
_ROLE_LINE_RE = re.compile(r"^\s*(?:user|assistant|system|human|gpt|bot)\s*:?\s*$", re.IGNORECASE | re.MULTILINE)

# How an assistant opens a reply. A "query" that starts like this is the model answering in the
# user's slot (a known Magpie failure), not a request.
_ANSWER_OPENERS = (
    "sure", "certainly", "of course", "absolutely", "here is", "here's", "here are", "great question",
    "i'm sorry", "i am sorry", "i apologize", "as an ai", "hello! how can i", "hi! how can i",
    "hello, how can i", "how can i assist", "how can i help you", "thank you for",
)
# First words of requests: question words, modal openings and imperative verbs.
_REQUEST_WORDS = frozenset("""
what how why when where who whom whose which is are was were do does did can could would should will
shall may might have has am write explain describe list give create generate summarize summarise
translate compare calculate compute solve find help tell suggest provide name define design make
plan draft compose rewrite convert classify identify analyze analyse evaluate outline recommend
show imagine please implement build fix improve edit correct convince argue discuss predict estimate
determine prove simplify sort choose pick develop propose brainstorm paraphrase rephrase continue
complete fill answer debug optimize optimise refactor teach guide assist i i'm i've i'd i'll my we our
let let's consider given suppose assume
""".split())
_REQUEST_PHRASES = ("help me", "i need", "i want", "i'd like", "i would like", "can you", "could you",
                    "would you", "please", "looking for", "any tips", "any advice", "how to")

# The most frequent English function words: an English text of six words or more has some.
_EN_STOPWORDS = frozenset("""
the a an and or but of to in on at for with from by is are was were be been it this that these those
i you he she we they my your our their me him her us them what which who how why when where not no
do does did can could would should will have has had if so as than then there here about into
""".split())

_WORD_RE = re.compile(r"\w+", re.UNICODE)


def word_count(text: str) -> int:
    """Number of ``\\w+`` runs in ``text`` (a run of CJK characters counts as one)."""
    return len(_WORD_RE.findall(text))


def normalise(text: str) -> str:
    """Case-folded, NFKC-normalised text with punctuation removed and whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_WORD_RE.findall(text))


@dataclass(frozen=True)
class FilterRules:
    """What counts as a good replay row.

    Attributes:
        min_query_words: shorter queries are dropped ("too-short").
        max_query_words: longer queries are dropped ("too-long").
        min_answer_words: shorter answers are dropped; refusals are exempt, so short refusals
            are not filtered out more often than other answers.
        max_answer_words: longer answers are dropped (None: no limit beyond truncation).
        require_question: drop queries that do not read as a request ("not-a-question").
        language: "en" keeps English text only (a script and function-word check); None skips it.
        refusals: "proportional" (default: refusals are kept in the share the model gives them,
            see :func:`keep_refusal`), "keep" (every refusal that passes the checks) or "drop".
        markers: template markup that must not appear in a query or answer.
        context_lines: lines of the pre-query prompt (e.g. the system prompt); a query that
            repeats one is template leakage.
    """

    min_query_words: int = 3
    max_query_words: int = 200
    min_answer_words: int = 1
    max_answer_words: int | None = None
    require_question: bool = True
    language: str | None = None
    refusals: str = "proportional"
    markers: tuple[str, ...] = GENERIC_MARKERS
    context_lines: tuple[str, ...] = field(default=())


def has_leakage(text: str, markers: Iterable[str], context_lines: Iterable[str] = (), *,
                role_lines: bool = True) -> str | None:
    """The template fragment found in ``text``, or None.

    Args:
        text: a generated query or answer.
        markers: template markup strings (special tokens, headers, stop strings).
        context_lines: prompt lines (such as the system prompt) that a query must not repeat.
        role_lines: also flag a bare role name on its own line ("assistant").
    """
    for m in markers:
        if m and m in text:
            return m
    for line in context_lines:
        if line and line in text:
            return line[:40]
    if role_lines:
        hit = _ROLE_LINE_RE.search(text)
        if hit:
            return hit.group(0).strip()
    return None


def looks_like_request(text: str) -> bool:
    """True when ``text`` reads as something a user asks or tells an assistant to do.

    A question mark, a request word first (question word, modal, imperative verb, "I ..."),
    or a request phrase ("can you", "help me", "please") anywhere makes a request; text that
    opens like an assistant reply ("Sure! Here is ...") never does.
    """
    low = text.strip().lower().lstrip("\"'*#>-` ")
    if not low or low.startswith(_ANSWER_OPENERS):
        return False
    if "?" in low:
        return True
    first = re.match(r"[\w']+", low)
    if first and first.group(0) in _REQUEST_WORDS:
        return True
    return any(p in low for p in _REQUEST_PHRASES)


def is_language(text: str, language: str) -> bool:
    """A cheap, model-free language check (only ``"en"`` is supported).

    English: at least 90% of the letters are ASCII, and a text of six words or more contains at
    least one common English function word. Text without letters passes (numbers, code).
    """
    if language != "en":
        raise ValueError(f"unsupported language '{language}' (supported: {', '.join(LANGUAGES)})")
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return True
    if sum(ch.isascii() for ch in letters) / len(letters) < 0.9:
        return False
    words = re.findall(r"[a-z']+", text.lower())
    return len(words) < 6 or any(w in _EN_STOPWORDS for w in words)


def check_query(text: str, finish_reason: str, rules: FilterRules) -> tuple[str | None, str]:
    """Run the per-query checks (all but the duplicate checks) in order.

    Args:
        text: the generated query, stripped.
        finish_reason: "stop" or "length" (hit the token cap: the query is cut off).
        rules: the filter settings.

    Returns:
        ``(reason, detail)``: the first failed check (None when all pass) and a short detail.
    """
    if not text.strip():
        return "empty", ""
    if finish_reason == "length":
        return "truncated", "hit the query token cap"
    n = word_count(text)
    if n < rules.min_query_words:
        return "too-short", f"{n} words < {rules.min_query_words}"
    if n > rules.max_query_words:
        return "too-long", f"{n} words > {rules.max_query_words}"
    leak = has_leakage(text, rules.markers, rules.context_lines)
    if leak:
        return "template-leakage", leak
    if rules.require_question and not looks_like_request(text):
        return "not-a-question", ""
    if rules.language and not is_language(text, rules.language):
        return "language", f"not {rules.language}"
    return None, ""


def check_answer(text: str, finish_reason: str, rules: FilterRules, *, refusal: bool) -> tuple[str | None, str]:
    """Run the per-answer checks in order (see :func:`check_query`).

    Args:
        text: the generated answer, stripped.
        finish_reason: "stop" or "length".
        rules: the filter settings.
        refusal: whether the answer is a refusal (:func:`sdft.refusal.is_refusal`).
    """
    if not text.strip():
        return "answer-empty", ""
    if finish_reason == "length":
        return "answer-truncated", "hit the answer token cap"
    n = word_count(text)
    if n < rules.min_answer_words and not refusal:
        return "answer-too-short", f"{n} words < {rules.min_answer_words}"
    if rules.max_answer_words is not None and n > rules.max_answer_words:
        return "answer-too-long", f"{n} words > {rules.max_answer_words}"
    # Answers may quote "User:" in a dialogue they write: only markup counts as leakage here.
    leak = has_leakage(text, rules.markers, role_lines=False)
    if leak:
        return "answer-leakage", leak
    if rules.language and not is_language(text, rules.language):
        return "answer-language", f"not {rules.language}"
    if refusal and rules.refusals == "drop":
        return "refusal", ""
    return None, ""


def keep_refusal(kept_refusals: int, kept: int, share: float) -> bool:
    """Whether one more refusal may join ``kept`` passing rows holding ``kept_refusals`` refusals.

    Short answers survive the length and truncation checks more often than long ones, and
    refusals are short, so without this rule they would be over-represented in the kept rows
    (and a model trained on them would refuse more). A refusal is kept while the kept rows'
    refusal count stays within half a row of ``share`` (the refusal share among *all* answers
    the model gave), i.e. ``kept_refusals + 1 <= share * (kept + 1) + 0.5``.
    """
    return kept_refusals + 1 <= share * (kept + 1) + 0.5


# ---------------------------------------------------------------------------------------------
# duplicates

def shingles(text: str, n: int = 5, unit: str = "char") -> set[str]:
    """The ``n``-gram shingles of the normalised text.

    Args:
        text: any text.
        n: shingle length, in characters (``unit="char"``) or words (``unit="word"``).
        unit: "char" (default) or "word". Queries are short: one changed word alters only a
            few character 5-grams, but up to ``n`` of a dozen word ``n``-grams.

    Returns:
        The set of shingles (the whole normalised text when it is shorter than ``n``).
    """
    norm = normalise(text)
    if unit == "word":
        words = norm.split()
        if len(words) <= n:
            return {" ".join(words)}
        return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}
    if unit != "char":
        raise ValueError(f"shingle unit must be char or word, got '{unit}'")
    if len(norm) <= n:
        return {norm}
    return {norm[i:i + n] for i in range(len(norm) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """|a & b| / |a | b| (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _h64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")


class MinHasher:
    """MinHash signatures with ``num_perm`` hash functions (fixed seed: reproducible).

    Shingles are hashed to 64 bits with BLAKE2b; hash function ``i`` XORs a random 64-bit salt
    into that value and applies the SplitMix64 finaliser, a strong bit mixer. (The textbook
    ``(a * x + b) mod p`` family was tried first: its minima are correlated across functions,
    which made LSH miss ~7% of pairs with similarity 0.79 instead of ~0.04%.)
    """

    def __init__(self, num_perm: int = 64, seed: int = 1):
        import numpy as np

        rng = random.Random(seed)
        self.num_perm = num_perm
        self._salts = np.array([rng.getrandbits(64) for _ in range(num_perm)], dtype=np.uint64)

    def signature(self, shingle_set: set[str]) -> tuple[int, ...]:
        import numpy as np

        x = np.array([_h64(s) for s in shingle_set], dtype=np.uint64)
        z = self._salts[:, None] ^ x[None, :]
        # SplitMix64 finaliser; uint64 array arithmetic wraps modulo 2^64 as intended.
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        return tuple(int(v) for v in z.min(axis=1))


class Deduplicator:
    """Exact and near-duplicate detection over a growing set of queries.

    :meth:`check` compares a text with every text :meth:`add` ed before it: "exact-duplicate"
    when the normalised texts are equal, "near-duplicate" when the Jaccard similarity of their
    n-gram shingles (:func:`shingles`) is at least ``threshold``. LSH banding over MinHash signatures picks
    the candidates (a pair with similarity 0.7 is a candidate with probability ~0.99 at the
    default 16 bands x 4 rows); the exact Jaccard then decides, so there are no false positives.

    Args:
        threshold: Jaccard similarity for a near duplicate; None or >= 1 disables the near check.
        ngram: shingle length (characters or words, see ``unit``).
        unit: "char" or "word" shingles.
        num_perm: MinHash permutations; must be ``bands * rows``.
        bands: LSH bands.
    """

    def __init__(self, threshold: float | None = 0.7, *, ngram: int = 5, unit: str = "char", num_perm: int = 64,
                 bands: int = 16):
        if num_perm % bands:
            raise ValueError(f"num_perm ({num_perm}) must be a multiple of bands ({bands})")
        self.threshold = threshold if threshold is not None and threshold < 1 else None
        self.ngram = ngram
        self.unit = unit
        self.bands = bands
        self.rows = num_perm // bands
        self._hasher = MinHasher(num_perm) if self.threshold is not None else None
        self._exact: dict[str, int] = {}
        self._buckets: list[dict[tuple[int, ...], list[int]]] = [{} for _ in range(bands)]
        self._shingles: list[set[str]] = []
        self._labels: list[str] = []

    def __len__(self) -> int:
        return len(self._shingles)

    def _prepare(self, text: str) -> tuple[str, set[str], tuple[int, ...] | None]:
        sh = shingles(text, self.ngram, self.unit)
        return normalise(text), sh, self._hasher.signature(sh) if self._hasher is not None else None

    def _bands(self, sig: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [sig[i * self.rows:(i + 1) * self.rows] for i in range(self.bands)]

    def _check(self, key: str, sh: set[str], sig: tuple[int, ...] | None) -> tuple[str | None, str]:
        if key in self._exact:
            return "exact-duplicate", f"same as {self._labels[self._exact[key]]}"
        if sig is None or self.threshold is None:
            return None, ""
        seen: set[int] = set()
        for i, band in enumerate(self._bands(sig)):
            for j in self._buckets[i].get(band, ()):
                if j in seen:
                    continue
                seen.add(j)
                sim = jaccard(sh, self._shingles[j])
                if sim >= self.threshold:
                    return "near-duplicate", f"jaccard {sim:.2f} with {self._labels[j]}"
        return None, ""

    def _add(self, key: str, sh: set[str], sig: tuple[int, ...] | None, label: str | None) -> int:
        idx = len(self._shingles)
        self._exact.setdefault(key, idx)
        self._shingles.append(sh)
        self._labels.append(label if label is not None else f"#{idx}")
        if sig is not None:
            for i, band in enumerate(self._bands(sig)):
                self._buckets[i].setdefault(band, []).append(idx)
        return idx

    def check(self, text: str) -> tuple[str | None, str]:
        """``(reason, detail)``: whether ``text`` duplicates an added text (None: it does not)."""
        return self._check(*self._prepare(text))

    def add(self, text: str, label: str | None = None) -> int:
        """Index ``text`` (``label`` names it in later duplicate details); returns its number."""
        return self._add(*self._prepare(text), label)

    def check_and_add(self, text: str, label: str | None = None) -> tuple[str | None, str]:
        """:meth:`check`, then :meth:`add` when ``text`` is not a duplicate."""
        key, sh, sig = self._prepare(text)
        reason, detail = self._check(key, sh, sig)
        if reason is None:
            self._add(key, sh, sig, label)
        return reason, detail


def dedup(texts: Iterable[str], threshold: float | None = 0.7, *, ngram: int = 5,
          unit: str = "char") -> list[tuple[str | None, str]]:
    """``(reason, detail)`` for each text against the texts before it (first occurrence kept)."""
    d = Deduplicator(threshold, ngram=ngram, unit=unit)
    return [d.check_and_add(t, f"#{i}") for i, t in enumerate(texts)]
