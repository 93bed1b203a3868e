"""The Hugging Face Trainer callback: a tiny Llama trained with ``transformers.Trainer`` lands on
its MAC target, is removed exactly, saves, resumes mid-selection, and runs under bf16 autocast."""

from __future__ import annotations

import copy

import pytest
import torch

import sss

tf = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from sss.integrations.hf_save import save_compact  # noqa: E402
from sss.integrations.huggingface import STATE_FILE, SelectionCallback  # noqa: E402

VOCAB = 128


def tiny_llama(seed: int = 0):
    torch.manual_seed(seed)
    config = tf.LlamaConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, intermediate_size=128, max_position_embeddings=64,
                            use_cache=False)  # fmt: skip
    return tf.LlamaForCausalLM(config)


class Tokens(torch.utils.data.Dataset):
    """64 sequences of 16 token ids (the language-model labels are the ids)."""

    def __init__(self) -> None:
        self.ids = torch.randint(0, VOCAB, (64, 16), generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


EXAMPLE = torch.randint(0, VOCAB, (1, 16), generator=torch.Generator().manual_seed(2))


class StopAt(tf.TrainerCallback):
    """Stops the training after ``step`` optimizer steps (a crash after a checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step >= self.step


def train(
    out, *, resume: str | None = None, stop_at: int | None = None, **args
) -> tuple[SelectionCallback, object, object]:
    model = tiny_llama()
    callback = SelectionCallback(model, EXAMPLE, structures=("channel", "head"), target_macs=0.6, select_for=0.5,
                                 log=lambda line: None)  # fmt: skip
    arguments = tf.TrainingArguments(str(out), per_device_train_batch_size=8, gradient_accumulation_steps=2,
                                     max_steps=12, learning_rate=1e-3, use_cpu=True, save_steps=4,
                                     report_to=[], disable_tqdm=True, seed=0, **args)  # fmt: skip
    callbacks = [callback, *([StopAt(stop_at)] if stop_at else [])]
    trainer = tf.Trainer(model=model, args=arguments, train_dataset=Tokens(), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    return callback, model, trainer


def test_the_callback_lands_on_the_target_removes_exactly_and_saves(tmp_path):
    dense = sss.count(tiny_llama(), EXAMPLE)[0]
    callback, model, trainer = train(tmp_path)
    selection = callback.selection
    assert selection.landed and selection.step_count == 6  # half of the 12 optimizer steps selected
    assert {r.kind for r in sss.gates(model)} == {"channel", "head"}
    macs = sss.count(callback.compact, EXAMPLE)[0]
    assert abs(macs / dense - 0.6) <= 0.6 * 0.02 + 1e-9, macs / dense
    model.eval()
    torch.testing.assert_close(callback.compact(EXAMPLE).logits, model(EXAMPLE).logits, rtol=1e-5, atol=1e-5)
    # The Trainer's AdamW never moved a factor (no state for any), though its param groups hold them.
    factors = {id(r.weight) for r in sss.gates(model)}
    assert factors <= {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not factors & {id(p) for p in trainer.optimizer.state}
    assert (tmp_path / "checkpoint-4" / STATE_FILE).is_file()
    if callback.saved_as == "pretrained":
        reloaded = tf.LlamaForCausalLM.from_pretrained(str(tmp_path / "compact"))
    else:  # a budget's widths differ between layers: no config says them
        reloaded = sss.load(tmp_path / "compact", base=tiny_llama())
    torch.testing.assert_close(reloaded.eval()(EXAMPLE).logits, callback.compact(EXAMPLE).logits)


def test_a_resumed_trainer_continues_the_selection(tmp_path):
    whole, whole_model, _ = train(tmp_path / "whole")
    train(tmp_path / "cut", stop_at=4)  # stops at the checkpoint, two steps before the landing
    resumed, resumed_model, _ = train(tmp_path / "cut", resume=str(tmp_path / "cut" / "checkpoint-4"))
    assert resumed.selection.step_count == whole.selection.step_count == 6
    for a, b in zip(sss.gates(whole_model), sss.gates(resumed_model), strict=True):
        torch.testing.assert_close(a.weight, b.weight, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_trains_and_prunes_exactly(tmp_path):
    from accelerate.utils import extract_model_from_parallel

    callback, model, _ = train(tmp_path, bf16=True)
    # accelerate leaves its autocast wrapper on the trained model's forward; compared without it (fp32)
    model = extract_model_from_parallel(model, keep_fp32_wrapper=False).eval()
    torch.testing.assert_close(callback.compact(EXAMPLE).logits, model(EXAMPLE).logits, rtol=1e-5, atol=1e-5)


def test_a_uniformly_pruned_model_round_trips_through_save_pretrained(tmp_path):
    model = tiny_llama()
    gated = sss.attach(model, EXAMPLE, structures=("channel", "head"))
    with torch.no_grad():
        for ref in sss.gates(gated):  # the same cut in every layer: the config can say it
            ref.weight[: max(1, ref.weight.numel() // 4)] = 0  # 32 of 128 neurons, 1 of 2 key/value heads
    compact = sss.prune(gated).eval()
    assert save_compact(compact, tmp_path / "m", EXAMPLE) == "pretrained"
    again = tf.LlamaForCausalLM.from_pretrained(str(tmp_path / "m")).eval()
    assert (again.config.intermediate_size, again.config.num_attention_heads, again.config.num_key_value_heads) == (
        96,
        2,
        1,
    )
    torch.testing.assert_close(again(EXAMPLE).logits, compact(EXAMPLE).logits)


def test_a_model_its_config_cannot_say_is_saved_by_sss(tmp_path):
    config = tf.BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=128, max_position_embeddings=64, num_labels=3)  # fmt: skip
    model = tf.BertForSequenceClassification(config).eval()
    gated = sss.attach(copy.deepcopy(model), EXAMPLE, structures=("head",))
    with torch.no_grad():
        for ref in sss.gates(gated):
            ref.weight[0] = 0  # BERT's head width is hidden_size / num_attention_heads: fewer heads change it
    compact = sss.prune(gated).eval()
    assert save_compact(compact, tmp_path / "m", EXAMPLE) == "sss"
    again = sss.load(tmp_path / "m", base=model)
    torch.testing.assert_close(again.eval()(EXAMPLE).logits, compact(EXAMPLE).logits)


def test_whole_layers_removed_by_block_factors_round_trip_through_save_pretrained(tmp_path):
    model = tiny_llama()
    gated = sss.attach(model, EXAMPLE, structures=("block",))
    refs = sss.gates(gated)
    assert [r.name for r in refs] == ["model.layers.0.gate", "model.layers.1.gate"]  # attention, MLP each
    with torch.no_grad():
        refs[0].weight.zero_()  # the first layer, whole
        refs[1].weight.fill_(0.5)
    compact = sss.prune(gated).eval()
    assert save_compact(compact, tmp_path / "m", EXAMPLE) == "pretrained"
    again = tf.LlamaForCausalLM.from_pretrained(str(tmp_path / "m")).eval()
    assert again.config.num_hidden_layers == 1 and len(compact.model.layers) == 2  # the model itself unchanged
    torch.testing.assert_close(again(EXAMPLE).logits, compact(EXAMPLE).logits)
    with torch.no_grad():
        refs[0].weight[0] = 1.0  # only the attention of the first layer: no config says that
    assert save_compact(sss.prune(gated).eval(), tmp_path / "n", EXAMPLE) == "sss"
