"""Options of the commands that run a whole recipe (``sdft train``, ``sdft compare``), defined once.

Both take a recipe's data section as ``--data/--data-format/--data-name`` and the engine of their
generation steps (the rewrite, and the ask, eval and replay steps when in-process) as the rewrite
section's ``--backend/--base-url/--api-key/--max-concurrency``.
"""

from __future__ import annotations

from sdft.options import ConfigOptions
from sdft.pipeline import DataSection
from sdft.rewrite import RewriteConfig

DATA = ConfigOptions(DataSection, section="data",
                     names={"path": "--data", "format": "--data-format", "name": "--data-name"})
ENGINE = ConfigOptions(RewriteConfig, section="rewrite", only=["backend", "base_url", "api_key", "max_concurrency"])
