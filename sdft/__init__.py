"""sdft: fine-tune chat LLMs without making them forget (Self-Distillation Fine-Tuning).

Importing ``sdft`` is cheap: heavy packages (torch, transformers, vllm, datasets) are imported
only by the functions that use them.
"""

__version__ = "0.1.0"
