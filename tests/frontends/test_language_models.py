"""Language models compile whole: token ids (and a padding mask) as integer inputs, several inputs and outputs,
the causal mask, out-of-range ids refused at run time; the bundled GPT-2 and BERT layouts dense and compressed,
Hugging Face's own models from configs, and the artifact run in a fresh process without torch."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import adntn_compiler as adntn
from adntn_compiler.apps import models
from adntn_compiler.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(n_layer=2, n_embd=64, n_head=4, vocab=100, n_positions=32)
SMALL_BERT = dict(n_layer=2, hidden=64, n_head=4, intermediate=128, vocab=100, max_positions=32)


def _close(y, ref, tol=1e-4):
    ys, refs = (y, ref) if isinstance(y, tuple) else ((y,), (ref,))
    for a, b in zip(ys, refs):
        b = b.detach().numpy() if hasattr(b, "detach") else b
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= tol * np.abs(b).max(), np.abs(a - b).max() / np.abs(b).max()


def _ids(*shape, vocab=100, seed=0):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("compressed", [False, True])
def test_gpt2_layout_compiles_from_token_ids_and_its_causal_mask_is_applied(batch, compressed):
    model = (models.compressed_gpt2(ratio=20, attention=True, **SMALL) if compressed else
             models.gpt2(lm_head=True, **SMALL)).eval()
    ids = _ids(batch, 16)
    exe = adntn.compile(model, example_inputs=(ids,))
    assert exe.inputs == [{"name": "x", "shape": [batch, 16], "dtype": "int64", "rows": 100}]
    _close(exe(ids.numpy()), model(ids))
    if compressed:
        assert sum(lay["kind"] == "adntn" for lay in exe.manifest["layers"]) == 8  # 2 blocks x (2 attn + 2 mlp)
    later = ids.clone()
    later[:, 8:] = (later[:, 8:] + 1) % 100  # other future tokens: positions 0..7 must not see them
    y, y2 = exe(ids.numpy()), exe(later.numpy())
    assert np.abs(y[:, :8] - y2[:, :8]).max() < 1e-5  # a mask ignored would change them
    assert np.abs(y[:, 8:] - y2[:, 8:]).max() > 1e-3


@pytest.mark.parametrize("compressed", [False, True])
def test_bert_layout_compiles_with_ids_and_a_padding_mask(compressed):
    model = (models.compressed_bert(ratio=20, **SMALL_BERT) if compressed else models.bert(**SMALL_BERT)).eval()
    ids, mask = _ids(3, 16, seed=1), torch.ones(3, 16, dtype=torch.long)
    mask[1, 10:], mask[2, :3] = 0, 0  # right and left padding
    exe = adntn.compile(model, example_inputs=(ids, mask))
    assert [(i["name"], i["dtype"], i.get("rows")) for i in exe.inputs] == [("input_ids", "int64", 100),
                                                                             ("attention_mask", "int64", None)]
    _close(exe(ids.numpy(), mask.numpy()), model(ids, mask))
    other = mask.clone()
    other[0, 12:] = 0  # the mask is an input: another mask, another answer (as torch's)
    _close(exe(ids.numpy(), other.numpy()), model(ids, other))
    assert np.abs(exe(ids.numpy(), other.numpy())[0] - exe(ids.numpy(), mask.numpy())[0]).max() > 1e-3
    with pytest.raises(ConfigError, match=r"input 'attention_mask' holds integers: 0.5 at \(0, 0\) is not a whole"):
        exe(ids.numpy(), mask.numpy() * 0.5)


def test_out_of_range_token_ids_are_refused_at_run_time_by_name():
    model = models.gpt2(**SMALL).eval()
    exe = adntn.compile(model, example_inputs=(_ids(1, 8),))
    ok = _ids(1, 8).numpy()
    for bad, what in ((100, r"100 at \(0, 3\)"), (-1, r"-1 at \(0, 3\)"), (2.5, r"2.5 at \(0, 3\)")):
        x = ok.astype(np.float64)
        x[0, 3] = bad
        with pytest.raises(ConfigError, match=rf"input 'x'.*index {what} is out of range for a table of 100 rows"):
            exe(x)
        with pytest.raises(ConfigError, match="out of range"):
            exe.reference(x)
    with pytest.raises(ConfigError, match=r"takes 1 input\(s\) \(x\), got 2"):
        exe(ok, ok)


def test_several_outputs_come_back_as_a_tuple():
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(30, 8)
            self.fc = torch.nn.Linear(8, 5)

        def forward(self, ids, x):
            h = self.emb(ids) + x
            return self.fc(h), h.mean(-1)

    torch.manual_seed(0)
    m = Two().eval()
    ids, x = _ids(2, 6, vocab=30), torch.randn(2, 6, 8)
    exe = adntn.compile(m, example_inputs=(ids, x))
    assert [o["name"] for o in exe.outputs] == ["y0", "y1"]
    y = exe(ids.numpy(), x.numpy())
    assert isinstance(y, tuple) and len(y) == 2
    _close(y, tuple(m(ids, x)))
    _close(exe.reference(ids.numpy(), x.numpy()), tuple(m(ids, x)))


def test_hugging_face_models_compile_from_token_ids():
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    torch.manual_seed(0)
    gcfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32, use_cache=False,
                                   bos_token_id=0, eos_token_id=0)
    gpt = transformers.GPT2LMHeadModel(gcfg).eval()

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = gpt

        def forward(self, ids):
            return self.m(input_ids=ids, use_cache=False).logits

    ids = _ids(2, 16)
    _close(adntn.compile(Logits(), example_inputs=(ids,))(ids.numpy()), Logits()(ids))
    bcfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                   vocab_size=100, max_position_embeddings=32)
    bert = transformers.BertModel(bcfg, add_pooling_layer=False).eval()

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = bert

        def forward(self, ids, mask):
            return self.m(input_ids=ids, attention_mask=mask).last_hidden_state

    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 11:] = 0
    _close(adntn.compile(Hidden(), example_inputs=(ids, mask))(ids.numpy(), mask.numpy()), Hidden()(ids, mask))


@pytest.mark.parametrize("name", ["gpt2", "compressed_gpt2", "bert", "compressed_bert"])
def test_a_language_model_artifact_runs_in_a_fresh_process_without_torch(name, tmp_path):
    from tests.test_artifact import blocking

    kw = SMALL if "gpt2" in name else SMALL_BERT
    model = getattr(models, name)(**({"ratio": 20} if name.startswith("compressed") else {}), **kw).eval()
    ids, mask = _ids(2, 16, seed=2), torch.ones(2, 16, dtype=torch.long)
    mask[0, 12:] = 0
    xs = (ids,) if "gpt2" in name else (ids, mask)
    exe = adntn.compile(model, example_inputs=xs)
    path = exe.save(tmp_path / f"{name}.adntn")
    for k, x in enumerate(xs):
        np.save(tmp_path / f"x{k}.npy", x.numpy())
    bad = ids.numpy().copy()
    bad[1, 5] = 100
    np.save(tmp_path / "bad.npy", bad)
    code = blocking("torch") + f"""
import numpy as np
import adntn_compiler as adntn
from adntn_compiler.errors import ConfigError
exe = adntn.load({str(path)!r})
d = {str(tmp_path)!r}
xs = [np.load(d + f"/x{{k}}.npy") for k in range({len(xs)})]
np.save(d + "/y.npy", exe(*xs))
try:
    exe(np.load(d + "/bad.npy"), *xs[1:])
except ConfigError as e:
    print("refused:", e)
print("torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "index 100 at (1, 5) is out of range for a table of 100 rows" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "False"
    _close(np.load(tmp_path / "y.npy"), model(*xs))


# ---------------------------------------------------------------- the new ops against torch.nn.functional

@settings(max_examples=5, deadline=None)
@given(v=st.integers(2, 40), d=st.integers(1, 9), n=st.integers(1, 3), t=st.integers(1, 7), seed=st.integers(0, 99))
def test_embedding_of_run_time_ids_equals_torch(v, d, n, t, seed):
    torch.manual_seed(seed)
    table = torch.randn(v, d)

    class Emb(torch.nn.Module):
        def forward(self, ids):
            return F.embedding(ids, table) * 2

    ids = _ids(n, t, vocab=v, seed=seed)
    _close(adntn.compile(Emb(), example_inputs=(ids,))(ids.numpy()), Emb()(ids), 1e-6)


@settings(max_examples=5, deadline=None)
@given(n=st.integers(1, 3), t=st.integers(1, 6), fill=st.sampled_from([0.0, -1e4, 7.5]), seed=st.integers(0, 99))
def test_run_time_masks_in_masked_fill_where_logic_and_sdpa_equal_torch(n, t, fill, seed):
    class Masked(torch.nn.Module):
        def forward(self, x, mask):
            m = mask.to(torch.bool)
            keep = m[:, None, None, :] & torch.ones(1, 1, t, 1, dtype=torch.bool)
            a = x.masked_fill(~m[:, :, None], fill)
            b = torch.where(m[:, :, None], x, x * 2)
            q = x[:, None]
            att = F.scaled_dot_product_attention(q, q, q, attn_mask=keep | torch.eye(t, dtype=torch.bool))
            return a + b + att[:, 0]

    g = torch.Generator().manual_seed(seed)
    x, mask = torch.randn(n, t, 4, generator=g), torch.randint(0, 2, (n, t), generator=g)
    exe = adntn.compile(Masked(), example_inputs=(x, mask))
    _close(exe(x.numpy(), mask.numpy()), Masked()(x, mask), 1e-5)


@settings(max_examples=5, deadline=None)
@given(a=st.integers(1, 5), b=st.integers(1, 5), c=st.integers(1, 4), seed=st.integers(0, 99))
def test_indexing_by_constant_index_tensors_equals_torch(a, b, c, seed):
    rng = np.random.default_rng(seed)
    i0 = torch.from_numpy(rng.integers(-a, a, (3, 1)))
    i1 = torch.from_numpy(rng.integers(0, b, (1, 2)))

    class Index(torch.nn.Module):
        def forward(self, x):
            return x[i0, i1] + 1

    x = torch.randn(a, b, c)
    _close(adntn.compile(Index(), example_inputs=(x,))(x.numpy()), Index()(x), 1e-6)


@pytest.mark.qemu
def test_a_bert_c_bundle_takes_ids_and_mask_in_one_array_and_refuses_bad_ids_in_c():
    model = models.compressed_bert(ratio=20, n_layer=1, hidden=32, n_head=2, intermediate=64, vocab=50,
                                   max_positions=16).eval()
    ids, mask = _ids(1, 8, vocab=50, seed=3), torch.ones(1, 8, dtype=torch.long)
    mask[0, 6:] = 0
    b = adntn.compile(model, target="arm64", example_inputs=(ids, mask))
    header = b.files["adntn_model.h"].decode()
    assert "#define ADNTN_MODEL_INPUT_SIZE 16" in header
    assert "#define ADNTN_MODEL_INPUT_ATTENTION_MASK_OFFSET 8" in header
    _close(b(ids.numpy(), mask.numpy()), model(ids, mask))
    root = b._built(timeout=600)
    bad = np.concatenate([ids.numpy().reshape(-1), mask.numpy().reshape(-1)]).astype("<f4")
    for v in (50.0, -1.0, 0.5):  # past Python's check, straight into adntn_model_run: refused in C
        bad[2] = v
        (root / "input.bin").write_bytes(bad.tobytes())
        r = b._emulate(root, ["input.bin", "output.bin"], 120)
        assert r.returncode == 3 and b"adntn_model_run returned -3" in r.stdout + r.stderr, (v, r)


@settings(max_examples=4, deadline=None)
@given(d=st.integers(1, 24), t=st.integers(1, 5), eps=st.sampled_from([1e-6, 1e-5]), seed=st.integers(0, 99))
def test_rms_norm_patterns_equal_torch(d, t, eps, seed):
    torch.manual_seed(seed)

    class RMS(torch.nn.Module):  # Llama's: pow, mean, rsqrt; and torch's own nn.RMSNorm
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(d))
            self.norm = torch.nn.RMSNorm(d, eps=eps)

        def forward(self, x):
            y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * self.w
            return self.norm(y) + torch.sqrt(x * x + 1)

    x = torch.randn(2, t, d)
    m = RMS().eval()
    _close(adntn.compile(m, example_inputs=(x,))(x.numpy()), m(x), 1e-5)
