"""sss inside training loops that are not its own: :class:`Selection` (any loop), and callbacks
for Hugging Face ``transformers.Trainer`` (:mod:`sss.integrations.huggingface`) and Lightning
(:mod:`sss.integrations.lightning`), each imported only when its framework is installed."""

from sss.integrations.selection import Selection, SelectionSettings

__all__ = ["Selection", "SelectionSettings"]
