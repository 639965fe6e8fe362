"""Language-model pieces through the export frontend: Hugging Face's own GPT-2 and BERT (built from configs, random
weights, no hub) compile from their input embeddings and equal torch; constant index ops (position ids, the
token-type buffer, masks built from shapes) fold at compile time; Conv1D's addmm and tanh GELU's cube convert."""
import numpy as np
import pytest
import torch

import adntn_compiler as adntn
from adntn_compiler.errors import ConfigError


def _compiled_equals_torch(model, x, tol=1e-4):
    model = model.eval()
    exe = adntn.compile(model, example_inputs=(x,))
    y, ref = exe(x.numpy()), model(x).detach().numpy()
    assert np.abs(y - ref).max() <= tol * np.abs(ref).max(), np.abs(y - ref).max()
    return exe


class _Embeds(torch.nn.Module):
    """A Hugging Face model run on its input embeddings (token ids as an input are not supported yet)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(inputs_embeds=x, use_cache=False).last_hidden_state


def test_hugging_face_gpt2_compiles_from_embeddings_and_its_causal_mask_is_applied():
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32, use_cache=False,
                                  bos_token_id=0, eos_token_id=0)
    model = _Embeds(transformers.GPT2Model(cfg))
    x = torch.randn(2, 16, 64)
    exe = _compiled_equals_torch(model, x)
    later = x.clone()
    later[:, 8:] = torch.randn(2, 8, 64)  # the future: positions 0..7 must not see it
    y, y2 = exe(x.numpy()), exe(later.numpy())
    assert np.abs(y[:, :8] - y2[:, :8]).max() < 1e-5  # a mask ignored would change them
    assert np.abs(y[:, 8:] - y2[:, 8:]).max() > 1e-2


def test_hugging_face_bert_encoder_compiles_from_embeddings():
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    torch.manual_seed(1)
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                  vocab_size=100, max_position_embeddings=32)

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = transformers.BertModel(cfg, add_pooling_layer=False)

        def forward(self, x):
            return self.m(inputs_embeds=x).last_hidden_state

    _compiled_equals_torch(Encoder(), torch.randn(1, 16, 64))


class _Conv1D(torch.nn.Module):
    """Hugging Face's Conv1D: a dense layer whose weight is (in, out), applied by addmm."""

    def __init__(self, nx, nf):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(nx, nf) * 0.1)
        self.bias = torch.nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x):
        return torch.addmm(self.bias, x.view(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)


@pytest.mark.parametrize("exponent", [2, 3, 4])
def test_conv1d_addmm_and_small_powers_equal_torch(exponent):
    torch.manual_seed(exponent)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = _Conv1D(24, 40)

        def forward(self, x):
            h = self.c(x)
            return h + 0.044715 * torch.pow(h, float(exponent))

    _compiled_equals_torch(M(), torch.randn(3, 5, 24))


def test_constant_index_ops_fold_and_run_time_ids_are_refused_by_name():
    torch.manual_seed(2)

    class Pos(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.wpe = torch.nn.Embedding(32, 24)
            self.register_buffer("ids", torch.arange(32).expand(1, -1), persistent=False)
            self.register_buffer("types", torch.zeros(1, 32, dtype=torch.long), persistent=False)
            self.tte = torch.nn.Embedding(2, 24)

        def forward(self, x):
            pos = self.ids[:, : x.shape[1]]
            types = torch.gather(self.types.expand(x.shape[0], -1), 1, pos.expand(x.shape[0], -1))
            return x + self.wpe(pos) + self.tte(types)

    exe = _compiled_equals_torch(Pos(), torch.randn(2, 16, 24))
    assert len(exe.manifest["layers"]) == 0 or all(lay["kind"] != "adntn" for lay in exe.manifest["layers"])

    class Tokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = torch.nn.Embedding(50, 8)

        def forward(self, ids):
            return self.wte(ids + 1)

    with pytest.raises(ConfigError, match=r"embedding at wte: its indices are computed at run time"):
        adntn.compile(Tokens().eval(), example_inputs=(torch.zeros(1, 4, dtype=torch.long),))
