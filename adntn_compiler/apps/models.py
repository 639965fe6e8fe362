"""Bundled example models (random weights; shapes of the real classifier heads) and reference layer shapes."""
from __future__ import annotations

# (name, weight shape) of the large layers of AlexNet and VGG-16
LAYER_SHAPES: dict[str, tuple[int, ...]] = {
    "alexnet.fc6": (4096, 9216),
    "alexnet.fc7": (4096, 4096),
    "alexnet.fc8": (1000, 4096),
    "vgg16.fc6": (4096, 25088),
    "vgg16.fc7": (4096, 4096),
    "vgg16.fc8": (1000, 4096),
    "vgg16.conv5_3": (512, 512, 3, 3),
}

# The compression the demo applies to the VGG-16 head.
VGG16_HEAD_SPECS = {
    "0": dict(arch="ttn", rank=4, layout="interleaved", activation="tanh"),
    "3": dict(arch="attn", rank=4, layout="binary", activation="tanh"),
    "6": dict(arch="mera", ratio=2000, activation="tanh"),  # configuration chosen by target ratio
}


def vgg16_head(num_classes: int = 1000):
    """The VGG-16 classifier head: 25088 -> 4096 -> 4096 -> classes (dropout omitted: inference)."""
    from torch import nn

    return nn.Sequential(nn.Linear(25088, 4096), nn.ReLU(), nn.Identity(), nn.Linear(4096, 4096), nn.ReLU(),
                         nn.Identity(), nn.Linear(4096, num_classes))


def compressed_vgg16_head(seed: int = 0, specs: dict | None = None):
    """The VGG-16 head (seeded) with FC6/FC7/FC8 compressed by `specs` (default: the demo's VGG16_HEAD_SPECS)."""
    import torch

    from ..training.compress import compress

    with torch.random.fork_rng():  # the biases, without touching the caller's random state
        torch.manual_seed(seed)
        head = vgg16_head()
    specs = VGG16_HEAD_SPECS if specs is None else specs
    return compress(head, {k: dict(v, seed=seed + i) for i, (k, v) in enumerate(specs.items())})



# ---------------------------------------------------------------- whole networks (torchvision's layouts)
# torchvision cannot be imported beside this torch build, so the definitions are written out here, with
# torchvision's module names, so that its state dicts load (`model.load_state_dict(torchvision_state)`).

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def alexnet(num_classes: int = 1000):
    from torch import nn

    class AlexNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
                nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, num_classes))

        def forward(self, x):
            return self.classifier(self.avgpool(self.features(x)).flatten(1))

    return AlexNet()


def vgg16_layers(batch_norm: bool, inplace: bool = True) -> list:
    """torchvision's VGG-16 `features` stack as a list of modules (indices as in its state dict)."""
    from torch import nn

    layers, c = [], 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), *([nn.BatchNorm2d(v)] if batch_norm else []),
                       nn.ReLU(inplace=inplace)]
            c = v
    return layers


def _vgg(batch_norm: bool, num_classes: int):
    from torch import nn

    layers = vgg16_layers(batch_norm)

    class VGG(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(True),
                nn.Dropout(), nn.Linear(4096, num_classes))

        def forward(self, x):
            return self.classifier(self.avgpool(self.features(x)).flatten(1))

    return VGG()


def vgg16(num_classes: int = 1000):
    return _vgg(False, num_classes)


def vgg16_bn(num_classes: int = 1000):
    return _vgg(True, num_classes)


def resnet18(num_classes: int = 1000):
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + idt)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            chans, c = (64, 128, 256, 512), 64
            for i, cout in enumerate(chans):
                stride = 1 if i == 0 else 2
                setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(c, cout, stride), BasicBlock(cout, cout, 1)))
                c = cout
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    return ResNet()


# MobileNetV2's inverted residual stages: (expansion t, channels c, repeats n, first stride s)
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1))


def mobilenet_v2(num_classes: int = 1000):
    """MobileNetV2 (width 1.0) in torchvision's layout (`features.N`, `conv.K`, `classifier.1`): depthwise 3x3 and
    pointwise convs with batch norm and ReLU6, inverted residuals; torchvision's initialisation."""
    from torch import nn

    def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
        layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, *([nn.ReLU6(inplace=True)] if act else []))

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, t: int):
            super().__init__()
            hidden = cin * t
            self.use_res_connect = stride == 1 and cin == cout
            expand = [conv_bn(cin, hidden, 1)] if t != 1 else []
            self.conv = nn.Sequential(*expand, conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                      nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            features, c = [conv_bn(3, 32, 3, 2)], 32
            for t, cout, n, s in MOBILENET_V2_STAGES:
                for i in range(n):
                    features.append(InvertedResidual(c, cout, s if i == 0 else 1, t))
                    c = cout
            features.append(conv_bn(c, 1280, 1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
            for m in self.modules():  # torchvision's
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out")
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0, 0.01)
                    nn.init.zeros_(m.bias)

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
            return self.classifier(x.flatten(1))

    return MobileNetV2()


def vit_block(dim: int = 768, heads: int = 12, mlp_ratio: int = 4):
    """A pre-norm ViT encoder block on (N, T, dim): x + attn(ln1(x)), then + mlp(ln2(x)) (timm's layout: `attn.qkv`,
    `attn.proj`, `mlp.fc1`, `mlp.fc2`)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            N, T, D = x.shape
            qkv = self.qkv(x).reshape(N, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            y = F.scaled_dot_product_attention(q, k, v)
            return self.proj(y.transpose(1, 2).reshape(N, T, D))

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(dim, mlp_ratio * dim)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(mlp_ratio * dim, dim)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = Attention()
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = Mlp()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    return Block()


# ---------------------------------------------------------------- language models (Hugging Face's layouts)
# GPT-2 and BERT written out with the module names and shapes of transformers' GPT2Model / GPT2LMHeadModel /
# BertModel, so that their state dicts load (strict) without transformers; ops kept to those the export frontend
# converts (view, permute, addmm / linear, layer_norm, SDPA, embedding, arange). Inference only: no dropout, no
# KV cache.


def _conv1d_class():
    """Hugging Face's Conv1D: a linear layer whose weight is stored transposed, (nx, nf)."""
    import torch
    from torch import nn

    class Conv1D(nn.Module):
        def __init__(self, nf: int, nx: int):
            super().__init__()
            self.nf, self.nx = nf, nx
            self.weight = nn.Parameter(torch.empty(nx, nf).normal_(std=0.02))  # HF's Conv1D init
            self.bias = nn.Parameter(torch.zeros(nf))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
            return y.view(*x.shape[:-1], self.nf)

    return Conv1D


def gpt2(n_layer: int = 12, n_embd: int = 768, n_head: int = 12, vocab: int = 50257, n_positions: int = 1024,
         lm_head: bool = False):
    """GPT-2 on input_ids (N, T) int64 -> last hidden state (N, T, n_embd), or with lm_head=True logits
    (N, T, vocab). Names and shapes of transformers' GPT2Model (GPT2LMHeadModel with lm_head=True: `transformer.`
    prefix, `lm_head.weight` tied to `wte` as HF ties it)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    Conv1D = _conv1d_class()
    head_dim = n_embd // n_head

    class GPT2Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = Conv1D(3 * n_embd, n_embd)
            self.c_proj = Conv1D(n_embd, n_embd)

        def forward(self, x):
            N, T, D = x.shape
            # the last axis is [q | k | v], each n_head x head_dim: HF's split(n_embd) then view per head
            qkv = self.c_attn(x).view(N, T, 3, n_head, head_dim).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
            return self.c_proj(y.transpose(1, 2).reshape(N, T, D))

    class GPT2MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = Conv1D(4 * n_embd, n_embd)
            self.c_proj = Conv1D(n_embd, 4 * n_embd)

        def forward(self, x):
            return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # HF's "gelu_new"

    class GPT2Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(n_embd, eps=1e-5)
            self.attn = GPT2Attention()
            self.ln_2 = nn.LayerNorm(n_embd, eps=1e-5)
            self.mlp = GPT2MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT2Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab, n_embd)
            self.wpe = nn.Embedding(n_positions, n_embd)
            for e in (self.wte, self.wpe):
                nn.init.normal_(e.weight, std=0.02)  # HF's initializer_range
            self.h = nn.ModuleList(GPT2Block() for _ in range(n_layer))
            self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            pos = torch.arange(input_ids.shape[1], device=input_ids.device)
            x = self.wte(input_ids) + self.wpe(pos)
            for block in self.h:
                x = block(x)
            return self.ln_f(x)

    class GPT2LMHeadModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = GPT2Model()
            self.lm_head = nn.Linear(n_embd, vocab, bias=False)
            self.lm_head.weight = self.transformer.wte.weight  # tied, as HF's tie_word_embeddings

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.lm_head(self.transformer(input_ids))

    return GPT2LMHeadModel() if lm_head else GPT2Model()


def _bert_layer_class(hidden: int, n_head: int, intermediate: int):
    """HF's BertLayer: self-attention, then the MLP, each followed by LayerNorm of the residual sum."""
    import torch.nn.functional as F
    from torch import nn

    head_dim = hidden // n_head

    class BertSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.query = nn.Linear(hidden, hidden)
            self.key = nn.Linear(hidden, hidden)
            self.value = nn.Linear(hidden, hidden)

        def forward(self, x, mask):
            N, T, D = x.shape
            q, k, v = (f(x).view(N, T, n_head, head_dim).transpose(1, 2) for f in (self.query, self.key, self.value))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return y.transpose(1, 2).reshape(N, T, D)

    class BertSelfOutput(nn.Module):  # also BertOutput: dense, then LayerNorm of the residual sum
        def __init__(self, d_in: int):
            super().__init__()
            self.dense = nn.Linear(d_in, hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)

        def forward(self, h, residual):
            return self.LayerNorm(self.dense(h) + residual)

    class BertAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.self = BertSelfAttention()
            self.output = BertSelfOutput(hidden)

        def forward(self, x, mask):
            return self.output(self.self(x, mask), x)

    class BertIntermediate(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(hidden, intermediate)

        def forward(self, x):
            return F.gelu(self.dense(x))  # exact GELU (HF's "gelu")

    class BertLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = BertAttention()
            self.intermediate = BertIntermediate()
            self.output = BertSelfOutput(intermediate)

        def forward(self, x, mask):
            a = self.attention(x, mask)
            return self.output(self.intermediate(a), a)

    return BertLayer


def bert(n_layer: int = 12, hidden: int = 768, n_head: int = 12, intermediate: int = 3072, vocab: int = 30522,
         max_positions: int = 512, type_vocab: int = 2, pooler: bool = False):
    """BERT encoder on input_ids (N, T) int64 and attention_mask (N, T) (1: attend, 0: padding; or None) -> last
    hidden state (N, T, hidden). Names and shapes of transformers' BertModel(config, add_pooling_layer=pooler);
    token type ids are all 0. With pooler=True `pooler.dense` is there (for the state dict) but unused."""
    import torch
    from torch import nn

    class BertEmbeddings(nn.Module):
        # (HF's position_ids / token_type_ids buffers are non-persistent: not in its state dict, so not here)
        def __init__(self):
            super().__init__()
            self.word_embeddings = nn.Embedding(vocab, hidden)
            self.position_embeddings = nn.Embedding(max_positions, hidden)
            self.token_type_embeddings = nn.Embedding(type_vocab, hidden)
            for e in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
                nn.init.normal_(e.weight, std=0.02)  # HF's initializer_range
            self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)

        def forward(self, input_ids):
            pos = torch.arange(input_ids.shape[1], device=input_ids.device)
            # token type 0 everywhere: row 0 of the table, broadcast
            x = self.word_embeddings(input_ids) + self.position_embeddings(pos) + self.token_type_embeddings.weight[0]
            return self.LayerNorm(x)

    BertLayer = _bert_layer_class(hidden, n_head, intermediate)

    class BertEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.ModuleList(BertLayer() for _ in range(n_layer))

        def forward(self, x, mask):
            for layer in self.layer:
                x = layer(x, mask)
            return x

    class BertPooler(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(hidden, hidden)

    class BertModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = BertEmbeddings()
            self.encoder = BertEncoder()
            if pooler:
                self.pooler = BertPooler()

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
            mask = None
            if attention_mask is not None:  # additive over the keys: 0 where attended, float32 min at padding
                mask = (1 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
            return self.encoder(self.embeddings(input_ids), mask)

    return BertModel()


# The layers of each block compressed_gpt2 / compressed_bert replace: (MLP layers, attention projections).
LM_BLOCK_LAYERS = {
    "gpt2": (("mlp.c_fc", "mlp.c_proj"), ("attn.c_attn", "attn.c_proj")),
    "bert": (("intermediate.dense", "output.dense"),
             ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense")),
}


def lm_layers(name: str, attention: bool = False, n_layer: int = 12, lm_head: bool = False, **_) -> tuple[str, ...]:
    """The layer names compressed_gpt2 / compressed_bert replace in gpt2(...) / bert(...) built with these keyword
    arguments (the others are ignored): every block's MLP layers, with attention=True also its attention
    projections."""
    mlp, attn = LM_BLOCK_LAYERS[name]
    blocks = {"gpt2": "transformer.h" if lm_head else "h", "bert": "encoder.layer"}[name]
    return tuple(f"{blocks}.{i}.{s}" for i in range(n_layer) for s in (attn if attention else ()) + mlp)


# The big layers each bundled network's compressed_* helper replaces by ADNTN layers; for the language models a
# function of the model's keyword arguments (the names depend on n_layer).
BIG_LAYERS = {
    "alexnet": ("classifier.1", "classifier.4", "classifier.6"),
    "vgg16": ("classifier.0", "classifier.3", "classifier.6"),
    "vgg16_bn": ("classifier.0", "classifier.3", "classifier.6"),
    "resnet18": ("fc",),
    "mobilenet_v2": ("classifier.1",),
    "vit_block": ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"),
    "gpt2": lambda **kw: lm_layers("gpt2", **kw),
    "bert": lambda **kw: lm_layers("bert", **kw),
}
BUILDERS = {"alexnet": alexnet, "vgg16": vgg16, "vgg16_bn": vgg16_bn, "resnet18": resnet18, "vit_block": vit_block,
            "mobilenet_v2": mobilenet_v2, "gpt2": gpt2, "bert": bert}


def compressed(name: str, ratio: float = 2000, arch: str = "ttn", seed: int = 0, layers=None, **model_kw):
    """Bundled network `name` (random weights, seeded) with its big layers (BIG_LAYERS, or the names `layers`)
    replaced by `arch` generators at about `ratio`x each; the rest stays dense."""
    import torch

    from ..training.compress import compress

    if name not in BUILDERS:
        from ..errors import ConfigError

        raise ConfigError(f"unknown bundled model {name!r}; known: {', '.join(BUILDERS)}")
    torch.manual_seed(seed)
    model = BUILDERS[name](**model_kw)
    layers = BIG_LAYERS[name] if layers is None else layers
    layers = layers(**model_kw) if callable(layers) else layers
    return compress(model, {k: dict(arch=arch, ratio=ratio, seed=seed + i) for i, k in enumerate(layers)})


def compressed_alexnet(ratio: float = 2000, **kw):
    return compressed("alexnet", ratio, **kw)


def compressed_vgg16(ratio: float = 2000, **kw):
    return compressed("vgg16", ratio, **kw)


def compressed_vgg16_bn(ratio: float | None = 2000, seed: int = 0, **kw):
    """VGG-16-BN with FC6/FC7/FC8 compressed; ratio=None: the demo's head configurations (VGG16_HEAD_SPECS)."""
    if ratio is not None:
        return compressed("vgg16_bn", ratio, seed=seed, **kw)
    import torch

    from ..training.compress import compress

    torch.manual_seed(seed)
    return compress(vgg16_bn(**kw), {f"classifier.{k}": dict(v, seed=seed + i)
                                     for i, (k, v) in enumerate(VGG16_HEAD_SPECS.items())})


def compressed_resnet18(ratio: float = 100, **kw):
    return compressed("resnet18", ratio, **kw)


def compressed_mobilenet_v2(ratio: float = 100, **kw):
    """MobileNetV2 with its classifier (1280 -> 1000) as an ADNTN layer; the conv trunk stays dense."""
    return compressed("mobilenet_v2", ratio, **kw)


def compressed_vit_block(ratio: float = 200, **kw):
    return compressed("vit_block", ratio, **kw)


def compressed_gpt2(ratio: float = 100, arch: str = "ttn", seed: int = 0, attention: bool = False, **model_kw):
    """gpt2(**model_kw) (seeded) with every block's MLP (`mlp.c_fc`, `mlp.c_proj`) and, with attention=True, its
    attention projections (`attn.c_attn`, `attn.c_proj`) replaced by ADNTN layers at about `ratio`x each."""
    return compressed("gpt2", ratio, arch, seed, layers=lm_layers("gpt2", attention, **model_kw), **model_kw)


def compressed_bert(ratio: float = 100, arch: str = "ttn", seed: int = 0, attention: bool = False, **model_kw):
    """bert(**model_kw) (seeded) with every layer's MLP (`intermediate.dense`, `output.dense`) and, with
    attention=True, its attention projections (query, key, value, `attention.output.dense`) replaced by ADNTN
    layers at about `ratio`x each."""
    return compressed("bert", ratio, arch, seed, layers=lm_layers("bert", attention, **model_kw), **model_kw)
