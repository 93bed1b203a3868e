"""A Hugging Face model pruned inside ``transformers.Trainer`` with one callback (CPU, random weights).

    python examples/huggingface_trainer.py

A small Llama (built from a config: nothing is downloaded) learns a toy language; the callback
selects MLP neurons and key/value head groups for half the training, lands on 60% of the MACs,
fine-tunes the rest, and saves the compact model (``save_pretrained`` when the config can say
its shape). ``tensorboard --logdir runs/examples/hf`` shows the selection.
"""

from __future__ import annotations

import torch
import transformers as tf

import sss
from sss.integrations.huggingface import SelectionCallback


class Counting(torch.utils.data.Dataset):
    """Sequences that count up modulo the vocabulary from a random start: learnable, not trivial."""

    def __init__(self, n: int, vocab: int = 128, length: int = 24) -> None:
        starts = torch.randint(0, vocab, (n, 1), generator=torch.Generator().manual_seed(0))
        self.ids = (starts + torch.arange(length)) % vocab

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def main(quick: bool = False, out: str = "runs/examples/hf") -> SelectionCallback:
    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, intermediate_size=256, max_position_embeddings=64,
                            use_cache=False)  # fmt: skip
    model = tf.LlamaForCausalLM(config)
    example = torch.arange(24)[None]
    dense = sss.count(model, example)[0]
    callback = SelectionCallback(model, example, structures="channel,head", target_macs=0.6, select_for=0.5,
                                 tensorboard=True)  # fmt: skip
    args = tf.TrainingArguments(out, per_device_train_batch_size=16, max_steps=20 if quick else 200,
                                learning_rate=3e-3, logging_steps=10, save_steps=100, use_cpu=True, report_to=[],
                                disable_tqdm=quick)  # fmt: skip
    tf.Trainer(model=model, args=args, train_dataset=Counting(640), callbacks=[callback]).train()
    compact = callback.compact
    print(f"dense {dense / 1e6:.2f}M MACs -> compact {sss.count(compact, example)[0] / 1e6:.2f}M MACs, "
          f"saved with {callback.saved_as} in {out}/compact")  # fmt: skip
    return callback


if __name__ == "__main__":
    main()
