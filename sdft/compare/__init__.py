"""``sdft compare``: task gain against forgetting for several fine-tuning methods, over training seeds.

One compare run trains every (method, training seed) *unit* from the same seed model with the
same budget, then scores the seed model and every tuned model in one ``sdft eval`` call on
identical prompts, and reports task gain next to each forgetting suite with intervals that
cover prompt sampling and seed variance, paired tests against plain SFT and the minimum
detectable difference. The stages, one module each:

* :mod:`sdft.compare.methods`: the named method presets (``sft``, ``sdft``, ``sdft+replay``, ...).
* :mod:`sdft.compare.config`: the compare recipe (a ``sdft train`` recipe plus ``compare:`` and
  ``methods:`` sections) as one validated config.
* :mod:`sdft.compare.split`: the held-out task split and its disjointness check.
* :mod:`sdft.compare.run`: shared rewrite/replay outputs, the resumable units, the eval.
* :mod:`sdft.compare.results`: reads a finished run's files (the only reader of ``answers.jsonl``).
* :mod:`sdft.compare.stats`: bootstrap intervals, paired tests, minimum detectable differences.
* :mod:`sdft.compare.report`: ``report.md``, ``report.json``, the Pareto plot and the radar chart.
"""
