"""The bundled language models (apps.models.gpt2 / bert) against transformers' own, their compressed variants, and
`compress` on Hugging Face's Conv1D."""
import pytest
import torch

from adntn_compiler.apps import models
from adntn_compiler.nn.layers import ADNTNLinear
from adntn_compiler.training.compress import compress, dense_weight, report

transformers = pytest.importorskip("transformers")

GPT2_KW = dict(n_layer=2, n_embd=64, n_head=4, vocab=100, n_positions=32)
BERT_KW = dict(n_layer=2, hidden=64, n_head=4, intermediate=128, vocab=100, max_positions=32)
N, T = 3, 16


def _gpt2_config():
    # bos/eos inside the small vocabulary: transformers warns otherwise
    return transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32, bos_token_id=0,
                                   eos_token_id=0)


def _bert_config():
    return transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                   vocab_size=100, max_position_embeddings=32)


def _ids(seed=0):
    return torch.randint(0, 100, (N, T), generator=torch.Generator().manual_seed(seed))


def _same_both_ways(ours, make_hf, run_ours, run_hf):
    """Our state dict loads strictly into HF's model and a fresh HF model's into ours; the outputs agree each time."""
    hf = make_hf().eval()
    hf.load_state_dict(ours.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(run_ours(ours), run_hf(hf), atol=1e-5, rtol=1e-5)
    torch.manual_seed(1)
    hf = make_hf().eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(run_ours(ours), run_hf(hf), atol=1e-5, rtol=1e-5)


def test_gpt2_matches_transformers():
    ours = models.gpt2(**GPT2_KW).eval()
    assert set(ours.state_dict()) == set(transformers.GPT2Model(_gpt2_config()).state_dict())
    ids = _ids()
    _same_both_ways(ours, lambda: transformers.GPT2Model(_gpt2_config()), lambda m: m(ids),
                    lambda m: m(ids).last_hidden_state)
    assert ours(ids).shape == (N, T, 64)


def test_gpt2_lm_head_matches_transformers():
    ours = models.gpt2(**GPT2_KW, lm_head=True).eval()
    assert ours.lm_head.weight is ours.transformer.wte.weight  # tied, as HF's
    ids = _ids(1)
    _same_both_ways(ours, lambda: transformers.GPT2LMHeadModel(_gpt2_config()), lambda m: m(ids),
                    lambda m: m(ids).logits)
    assert ours(ids).shape == (N, T, 100)
    assert ours.lm_head.weight is ours.transformer.wte.weight  # still tied after loading HF's state dict


@pytest.mark.parametrize("pooler", [False, True])
def test_bert_matches_transformers(pooler):
    ours = models.bert(**BERT_KW, pooler=pooler).eval()
    make_hf = lambda: transformers.BertModel(_bert_config(), add_pooling_layer=pooler)  # noqa: E731
    # HF's position_ids / token_type_ids buffers are non-persistent: neither side has them in its state dict
    assert set(ours.state_dict()) == set(make_hf().state_dict())
    ids = _ids(2)
    mask = torch.ones(N, T, dtype=torch.int64)
    mask[0, 10:] = 0  # right padding
    mask[2, :3] = 0  # left padding
    _same_both_ways(ours, make_hf, lambda m: m(ids), lambda m: m(ids).last_hidden_state)
    # the mask hides keys only: every query position, padding included, is defined the same way on both sides
    _same_both_ways(ours, make_hf, lambda m: m(ids, mask), lambda m: m(ids, attention_mask=mask).last_hidden_state)
    with torch.no_grad():
        assert not torch.allclose(ours(ids, mask)[0], ours(ids)[0], atol=1e-3)  # the mask does something


def _check_compressed(model, dense, names, ratio):
    modules = dict(model.named_modules())
    for n in names:
        assert isinstance(modules[n], ADNTNLinear), n
        g = modules[n].gen
        assert ratio <= g.compression_ratio < 3 * ratio, (n, g.compression_ratio)
    # everything else dense and unchanged in size: the parameters drop by exactly the replaced weights' excess
    saved = sum(g.dense_params - g.num_params for g in (modules[n].gen for n in names))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(dense) - count(model) == saved
    assert {r["layer"] for r in report(model).rows if r["arch"] != "dense"} == set(names)


@pytest.mark.parametrize("attention", [False, True])
def test_compressed_gpt2(attention):
    model = models.compressed_gpt2(ratio=50, attention=attention, **GPT2_KW).eval()
    names = [f"h.{i}.{s}" for i in range(2) for s in ("mlp.c_fc", "mlp.c_proj")]
    names += [f"h.{i}.{s}" for i in range(2) for s in ("attn.c_attn", "attn.c_proj")] if attention else []
    assert sorted(models.lm_layers("gpt2", attention, **GPT2_KW)) == sorted(names)
    _check_compressed(model, models.gpt2(**GPT2_KW), names, 50)
    if not attention:
        assert not isinstance(model.h[0].attn.c_attn, ADNTNLinear)
    with torch.no_grad():
        y = model(_ids())
    assert y.shape == (N, T, 64) and torch.isfinite(y).all()


def test_compressed_gpt2_lm_head_and_by_name():
    model = models.compressed_gpt2(ratio=50, lm_head=True, **GPT2_KW).eval()
    assert isinstance(model.transformer.h[1].mlp.c_proj, ADNTNLinear)
    with torch.no_grad():
        y = model(_ids())
    assert y.shape == (N, T, 100) and torch.isfinite(y).all()
    # the generic helper reaches the same layers through BIG_LAYERS
    same = models.compressed("gpt2", 50, **GPT2_KW)
    assert [n for n, m in same.named_modules() if isinstance(m, ADNTNLinear)] == \
        list(models.lm_layers("gpt2", **GPT2_KW))


@pytest.mark.parametrize("attention", [False, True])
def test_compressed_bert(attention):
    model = models.compressed_bert(ratio=50, attention=attention, **BERT_KW).eval()
    blocks = ("intermediate.dense", "output.dense")
    if attention:
        blocks += ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense")
    names = [f"encoder.layer.{i}.{s}" for i in range(2) for s in blocks]
    _check_compressed(model, models.bert(**BERT_KW), names, 50)
    if not attention:  # "attention.output.dense" also ends in "output.dense": it stays dense
        assert not isinstance(model.encoder.layer[0].attention.output.dense, ADNTNLinear)
    mask = torch.ones(N, T, dtype=torch.int64)
    mask[1, 12:] = 0
    with torch.no_grad():
        y = model(_ids(), mask)
    assert y.shape == (N, T, 64) and torch.isfinite(y).all()


def test_compress_hf_conv1d():
    from transformers.pytorch_utils import Conv1D

    from adntn_compiler.training.train import fit_weight

    torch.manual_seed(0)
    conv = Conv1D(16, 8)  # nf=16 outputs, nx=8 inputs: weight (8, 16)
    torch.nn.init.normal_(conv.weight)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(4, 5, 8)
    ref = (x @ conv.weight + conv.bias).detach()
    model = compress(torch.nn.Sequential(conv, torch.nn.Tanh()), {"0": dict(arch="ttn", rank=16)})
    layer = model[0]
    assert isinstance(layer, ADNTNLinear) and layer.gen.shape == (16, 8)
    assert torch.equal(layer.bias.detach(), conv.bias.detach())
    # compress starts from a random generator; fitted to the dense weight (transposed: (out, in)) it reproduces it
    fit_weight(layer.gen, dense_weight(conv).detach().double().numpy(), steps=300, progress=False)
    with torch.no_grad():
        for k, v in layer.gen.cores.items():
            layer.cores[k].copy_(torch.as_tensor(v))
        y = layer(x)
    assert y.shape == ref.shape
    assert ((y - ref).norm() / ref.norm()).item() < 1e-3


def test_compress_lists_conv1d_layers():
    from adntn_compiler.errors import ConfigError

    model = models.gpt2(**GPT2_KW)
    with pytest.raises(ConfigError, match=r"Conv1D layers: \['h.0.attn.c_attn'"):
        compress(model, {"h.0.mlp.nope": dict(arch="ttn", ratio=10)})
    rows = {r["layer"]: r for r in report(model).rows}
    assert rows["h.0.mlp.c_fc"]["shape"] == (256, 64) and rows["h.0.mlp.c_fc"]["arch"] == "dense"
