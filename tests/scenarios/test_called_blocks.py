"""Residual layers that ``torch.fx`` traces only as they are called (a forward with ``**kwargs``,
non-tensor arguments: Hugging Face's encoder and decoder layers) get block factors: their
attention and MLP branches, and whole layers, are removed exactly, and the compact model saves
and loads. A call the traced forward cannot take is an sss error, not a wrong answer."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

import sss
from sss.errors import UnsupportedModelError
from sss.structures.kinds.branch_ends import RemovedBranch

from .helpers import Logits, assert_round_trip, random_gated


class KeywordLayer(nn.Module):
    """A pre-norm layer as Hugging Face writes them: ``**kwargs``, a tuple of tensors (rotary
    tables) that ``torch.fx`` cannot unpack when it traces the layer alone, and an optional
    options object that its code reads."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mix, self.fc1, self.fc2 = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor, tables: tuple, options=None, **kwargs) -> torch.Tensor:
        if options is not None:
            x = x * options.scale
        scale, shift = tables
        h = x + self.mix(self.norm1(x) * scale + shift)
        return h + self.fc2(torch.relu(self.fc1(self.norm2(h))))


class KeywordNet(nn.Module):
    def __init__(self, dim: int = 8, depth: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.tables = nn.Parameter(torch.randn(2, dim))
        self.layers = nn.ModuleList(KeywordLayer(dim) for _ in range(depth))
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor, options=None) -> torch.Tensor:
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h, tables=(self.tables[0], self.tables[1]), options=options, unused=True)
        return self.head(h.mean(1))


def build() -> KeywordNet:
    torch.manual_seed(0)
    return KeywordNet().eval()


X = torch.randn(2, 5, 4)


def test_a_layer_with_keyword_arguments_loses_branches_and_whole_layers_exactly():
    gated = sss.attach(build(), X, structures=("block",))
    assert [r.name for r in sss.gates(gated)] == [f"layers.{i}.gate" for i in range(3)]
    with torch.no_grad():
        sss.gates(gated)[0].weight.copy_(torch.tensor([0.0, 0.7]))  # layer 0: its first branch
        sss.gates(gated)[1].weight.copy_(torch.tensor([0.0, 0.0]))  # layer 1: all of it
        sss.gates(gated)[2].weight.copy_(torch.tensor([1.3, 0.4]))
        expected = gated(X)
    compact = sss.prune(gated)
    with torch.no_grad():
        torch.testing.assert_close(compact(X), expected, rtol=1e-5, atol=1e-6)
    layers = compact.layers
    assert isinstance(layers[0].mix, RemovedBranch) and isinstance(layers[0].norm1, RemovedBranch)
    assert isinstance(layers[0].fc1, nn.Linear)
    assert all(isinstance(getattr(layers[1], n), RemovedBranch) for n in ("norm1", "mix", "norm2", "fc1", "fc2"))
    assert "forward" not in vars(layers[2])  # every branch kept: its own forward, λ folded in
    assert sss.gates(compact) == []
    assert sss.count(compact, X[:1])[1] < sss.count(build(), X[:1])[1]
    assert_round_trip(compact, X, base=build())
    again = sss.find_structures(compact, X, "block")  # a second round: the cut layers are not gated again
    assert again.names("block") == ["layers.2"]
    assert "layers.0: sss.prune removed or scaled its branches; it is not gated again" in again.skipped


def test_the_gated_layer_trains_in_both_modes_with_gradients_on_its_factors():
    gated = random_gated(build(), X, ("block",), zero_prob=0.0)
    with torch.no_grad():
        evaluated = gated.eval()(X)
    trained = gated.train()(X)  # another pattern (training mode): traced on first use
    torch.testing.assert_close(trained, evaluated)
    trained.sum().backward()
    assert all(r.weight.grad is not None and bool(r.weight.grad.abs().sum() > 0) for r in sss.gates(gated))


def test_a_call_its_traced_forward_cannot_take_is_an_sss_error():
    gated = sss.attach(build(), X, structures=("block",))
    with pytest.raises(UnsupportedModelError, match=r"KeywordLayer .* cannot take: its code reads the SimpleNamespace"):
        gated(X, options=types.SimpleNamespace(scale=2.0))


def test_a_layer_called_with_an_object_it_reads_is_skipped_with_the_reason():
    class WithOptions(KeywordNet):
        def forward(self, x: torch.Tensor, options=None) -> torch.Tensor:
            return super().forward(x, options=types.SimpleNamespace(scale=1.0))

    torch.manual_seed(0)
    report = sss.find_structures(WithOptions().eval(), X, ("block",))
    assert report.names("block") == []
    assert "layers.0: its code reads the SimpleNamespace it is given" in "; ".join(report.skipped)


def _hugging_face(name: str) -> nn.Module:
    tf = pytest.importorskip("transformers")
    text = {"vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 64, "max_position_embeddings": 32}  # fmt: skip
    torch.manual_seed(0)
    if name == "llama":  # pre-norm decoder: rotary tables, a cache, grouped-query attention
        return Logits(tf.LlamaForCausalLM(tf.LlamaConfig(**text, num_key_value_heads=2))).eval()
    if name == "phi":  # attention and MLP side by side: one branch, λ folded into both
        return Logits(tf.PhiForCausalLM(tf.PhiConfig(**text))).eval()
    if name == "bert":  # post-norm: each sum inside a BertSelfOutput/BertOutput, a LayerNorm between
        return Logits(tf.BertForSequenceClassification(tf.BertConfig(**text, num_labels=3))).eval()
    return Logits(tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                                   bos_token_id=0, eos_token_id=0))).eval()  # fmt: skip


@pytest.mark.parametrize(("name", "layers", "branches"), [
    ("llama", "model.model.layers", 2), ("bert", "model.bert.encoder.layer", 2), ("gpt2", "model.transformer.h", 2),
    ("phi", "model.model.layers", 1),
])  # fmt: skip
def test_hugging_face_layers_are_blocks_removed_exactly(name, layers, branches):
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    gated = sss.attach(_hugging_face(name), ids, structures=("block",))
    refs = sss.gates(gated)
    assert [r.name for r in refs] == [f"{layers}.{i}.gate" for i in range(2)]
    assert all(r.weight.numel() == branches for r in refs)
    with torch.no_grad():
        refs[0].weight.zero_()  # the whole first layer
        refs[1].weight.fill_(0.6)
        expected = gated(ids)
    compact = sss.prune(gated)
    with torch.no_grad():
        torch.testing.assert_close(compact(ids), expected, rtol=1e-5, atol=1e-5)
    first = compact.get_submodule(f"{layers}.0")
    kept = {type(m).__name__ for m in first.modules() if any(True for _ in m.parameters(recurse=False))}
    assert kept == ({"LayerNorm"} if name == "bert" else set())  # post-norm: its norms stay
    assert sss.count(compact, ids[:1])[0] < sss.count(_hugging_face(name), ids[:1])[0]
    assert_round_trip(compact, ids, base=_hugging_face(name))


def test_a_gated_hugging_face_model_saves_and_loads_with_its_factors(tmp_path):
    """A checkpoint taken mid-selection: the attach is replayed on token ids (not float zeros)."""
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    gated = random_gated(_hugging_face("llama"), ids, ("block", "channel"), zero_prob=0.3)
    sss.save(gated, tmp_path / "m")
    loaded = sss.load(tmp_path / "m", base=_hugging_face("llama"))
    assert [r.name for r in sss.gates(loaded)] == [r.name for r in sss.gates(gated)]
    with torch.no_grad():
        assert torch.equal(loaded.eval()(ids), gated(ids))
