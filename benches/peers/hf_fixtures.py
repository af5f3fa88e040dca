"""Writes the Hugging Face parity fixtures of tests/hf.rs (committed under tests/fixtures/hf/).

Random-weight sparse blocks built by `transformers` 4.57.1 itself, saved under the tensor names a
full checkpoint uses, plus an input batch and the block's outputs in eval mode:

    NAME.safetensors     the block's weights, e.g. model.layers.0.block_sparse_moe.experts.3.w1.weight
    NAME_io.safetensors  input [2, 5, d], output [2, 5, d], router_logits [10, E] (+ see below)

    PY="$(benches/peers/setup.sh | tail -n 1)"      # torch 2.9.0, transformers 4.57.1
    "$PY" benches/peers/hf_fixtures.py tests/fixtures/hf
    "$PY" benches/peers/hf_fixtures.py tests/fixtures/hf --only qwen3_moe olmoe   # just these

Blocks (d = 16, f = 32 unless said; semantics: the hf-formats.md memo):

    switch         SwitchTransformersSparseMLP, E 4, top-1           encoder.block.1.layer.1.mlp
    mixtral        MixtralSparseMoeBlock, E 4, top-2                 model.layers.0.block_sparse_moe
    qwen2_moe      Qwen2MoeSparseMoeBlock, E 4, top-2, shared 2f     model.layers.0.mlp
    qwen3_moe      Qwen3MoeSparseMoeBlock, E 8, top-3, normalised    model.layers.0.mlp
    olmoe          OlmoeSparseMoeBlock, E 8, top-2, unnormalised     model.layers.0.mlp
    deepseek_v3    DeepseekV3MoE, E 16 in 4 groups, 2 groups, top-4, sigmoid, nonzero
                   e_score_correction_bias, scale 2.5, 2 shared      model.layers.3.mlp
    gpt_oss        GptOssMLP, E 8, top-4, router bias, interleaved gate_up_proj with biases,
                   clamped SwiGLU (limit 7 is hit)                   model.layers.0.mlp
    gpt_oss_mxfp4  GptOssMLP, d = f = 64, E 4, top-2, experts stored as a Hub checkpoint stores
                   them: MXFP4 `*_blocks`/`*_scales` (uint8), router and biases bf16

router_logits is always the raw router output x·Wᵀ (+ b for gpt-oss) of the flat tokens, in f32,
before any softmax/sigmoid/bias. DeepSeek-V3's block returns no logits: they are recomputed as its
router does (f32 linear). The deepseek_v3 and gpt_oss io files also hold `routing_weights` [10, E]:
the weight HF gives each token's chosen experts (0 elsewhere), taken from HF's own router
(DeepseekV3TopkRouter's topk_weights, scaling factor included; GptOssMLP's router_scores).
gpt_oss_mxfp4_io's output is the block's with the dequantised expert weights (exact in bf16).

Writing also runs, for the new formats, an independent reference forward in our stacked layout
(W₁ [E, d, f], W₃ [E, d, f], W₂ [E, f, d]; f64 and f32) written from the memo, checks it against HF,
and for MXFP4 checks transformers' own dequantiser (convert_moe_packed_tensors) against ours.

--check DIR instead loads every NAME.safetensors found in DIR (e.g. the files examples/hf_interop
exported) into a fresh HF block with strict=True and compares its output with the committed
NAME_io.safetensors: the export → HF load direction of the parity. A gpt_oss_mxfp4.safetensors
there may hold dense `experts.gate_up_proj` [E, d, 2f] / `experts.down_proj` [E, f, d] (what our
export writes, f32 or bf16) or the packed `*_blocks`/`*_scales` (dequantised here by transformers'
convert_moe_packed_tensors), so `--check tests/fixtures/hf` checks the fixtures themselves.
"""

import argparse
import pathlib
import sys

import torch
import torch.nn.functional as F_
from safetensors.torch import load_file, save_file
from transformers.integrations.mxfp4 import FP4_VALUES, convert_moe_packed_tensors
from transformers.models.deepseek_v3.configuration_deepseek_v3 import DeepseekV3Config
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE
from transformers.models.gpt_oss.configuration_gpt_oss import GptOssConfig
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP
from transformers.models.mixtral.configuration_mixtral import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
from transformers.models.olmoe.configuration_olmoe import OlmoeConfig
from transformers.models.olmoe.modeling_olmoe import OlmoeSparseMoeBlock
from transformers.models.qwen2_moe.configuration_qwen2_moe import Qwen2MoeConfig
from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock
from transformers.models.qwen3_moe.configuration_qwen3_moe import Qwen3MoeConfig
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock
from transformers.models.switch_transformers.configuration_switch_transformers import (
    SwitchTransformersConfig,
)
from transformers.models.switch_transformers.modeling_switch_transformers import (
    SwitchTransformersSparseMLP,
)

D, F, E = 16, 32, 4
BATCH, SEQ = 2, 5
MX_D, MX_F = 64, 64  # MXFP4 packs 32 values of the input dimension: d and f multiples of 32 (2 groups)
SWIGLU_LIMIT = 7.0  # GptOssExperts hard-codes alpha 1.702 and limit 7.0


def switch():
    config = SwitchTransformersConfig(
        d_model=D, d_ff=F, num_experts=E, expert_capacity=BATCH * SEQ, router_jitter_noise=0.0,
        dense_act_fn="relu", dropout_rate=0.0,
    )
    return SwitchTransformersSparseMLP(config), "encoder.block.1.layer.1.mlp"


def mixtral():
    config = MixtralConfig(
        hidden_size=D, intermediate_size=F, num_local_experts=E, num_experts_per_tok=2,
        hidden_act="silu", router_jitter_noise=0.0,
    )
    return MixtralSparseMoeBlock(config), "model.layers.0.block_sparse_moe"


def qwen2_moe():
    config = Qwen2MoeConfig(
        hidden_size=D, moe_intermediate_size=F, shared_expert_intermediate_size=2 * F,
        num_experts=E, num_experts_per_tok=2, norm_topk_prob=False, hidden_act="silu",
    )
    return Qwen2MoeSparseMoeBlock(config), "model.layers.0.mlp"


def qwen3_moe():
    # Qwen3MoeConfig's own default is norm_topk_prob=False; the released Qwen3 MoE checkpoints'
    # config.json set true, which is what this fixture exercises.
    config = Qwen3MoeConfig(
        hidden_size=D, moe_intermediate_size=F, num_experts=8, num_experts_per_tok=3,
        norm_topk_prob=True, hidden_act="silu",
    )
    return Qwen3MoeSparseMoeBlock(config), "model.layers.0.mlp"


def olmoe():
    # OLMoE's experts are `intermediate_size` wide (there is no moe_intermediate_size).
    config = OlmoeConfig(hidden_size=D, intermediate_size=F, num_experts=8, num_experts_per_tok=2,
                         hidden_act="silu")
    assert config.norm_topk_prob is False
    return OlmoeSparseMoeBlock(config), "model.layers.0.mlp"


def deepseek_v3():
    config = DeepseekV3Config(
        hidden_size=D, moe_intermediate_size=F, n_routed_experts=16, num_experts_per_tok=4,
        n_group=4, topk_group=2, routed_scaling_factor=2.5, norm_topk_prob=True,
        n_shared_experts=2, hidden_act="silu",
    )
    return DeepseekV3MoE(config), "model.layers.3.mlp"


def gpt_oss():
    config = GptOssConfig(hidden_size=D, intermediate_size=F, num_local_experts=8,
                          num_experts_per_tok=4)
    return GptOssMLP(config), "model.layers.0.mlp"


def gpt_oss_mxfp4():
    config = GptOssConfig(hidden_size=MX_D, intermediate_size=MX_F, num_local_experts=4,
                          num_experts_per_tok=2)
    return GptOssMLP(config), "model.layers.0.mlp"


BLOCKS = {
    "switch": switch, "mixtral": mixtral, "qwen2_moe": qwen2_moe,
    # Appended after the first three, so that their seeds (the enumeration index) do not change.
    "qwen3_moe": qwen3_moe, "olmoe": olmoe, "deepseek_v3": deepseek_v3, "gpt_oss": gpt_oss,
    "gpt_oss_mxfp4": gpt_oss_mxfp4,
}


# ---------------------------------------------------------------------------------------------
# Extra initialisation of the newer blocks (after the routers' N(0, 0.5), before the input).


def finish_deepseek_v3(block):
    # A non-zero selection bias (the real checkpoints' values are non-zero: aux-loss-free balancing).
    block.gate.e_score_correction_bias.normal_(0.0, 0.1)
    return {}


def init_gpt_oss_experts(x):
    """GptOssExperts' parameters are torch.empty: give them values that hit the clamp at 7."""
    x.gate_up_proj.data.normal_(0.0, 1.0)
    x.gate_up_proj_bias.data.normal_(0.0, 0.5)
    x.down_proj.data.normal_(0.0, 0.01)
    x.down_proj_bias.data.normal_(0.0, 0.1)


def finish_gpt_oss(block):
    init_gpt_oss_experts(block.experts)
    return {}


def finish_gpt_oss_mxfp4(block):
    """Quantises the experts to MXFP4 as a Hub checkpoint stores them; the block keeps the exact
    dequantised weights; router and biases are rounded to bf16 (the checkpoint's dtype)."""
    x = block.experts
    init_gpt_oss_experts(x)
    with torch.no_grad():
        # Spread the blocks' magnitudes over 2^-2 .. 2^1 so that the scale bytes vary.
        for p in (x.gate_up_proj, x.down_proj):
            e, k, n = p.shape  # [E, in, out]; MXFP4 groups run along `in`
            mult = 2.0 ** torch.randint(-2, 2, (e, k // 32, n)).float()
            p.data *= mult.repeat_interleave(32, dim=1)
        x.gate_up_proj.data *= 0.5  # d = 64: pre-activations about as large as the d = 16 block's
        x.down_proj.data *= 0.25
        block.router.weight.data *= 0.5
        packed = {}
        for proj in ("gate_up_proj", "down_proj"):
            p = getattr(x, proj)
            blocks, scales = mxfp4_quantise(p.data.transpose(1, 2))  # rows = output features
            dense = mxfp4_dequantise(blocks, scales).transpose(1, 2).contiguous()  # [E, in, out]
            check_hf_dequantiser(proj, blocks, scales, dense)
            p.data.copy_(dense)
            packed[f"experts.{proj}_blocks"] = blocks
            packed[f"experts.{proj}_scales"] = scales
        for p in (block.router.weight, block.router.bias, x.gate_up_proj_bias, x.down_proj_bias):
            p.data.copy_(p.data.bfloat16().float())
    return packed


FINISH = {"deepseek_v3": finish_deepseek_v3, "gpt_oss": finish_gpt_oss,
          "gpt_oss_mxfp4": finish_gpt_oss_mxfp4}


# ---------------------------------------------------------------------------------------------
# MXFP4 (OCP Microscaling, E2M1 elements, one E8M0 scale per 32 elements)

FP4_MAGNITUDES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=torch.float64)


def mxfp4_quantise(w):
    """w [E, R, K] (R output rows, K input columns, K % 32 == 0) → blocks uint8 [E, R, K/32, 16],
    scales uint8 [E, R, K/32]. Element j of group g of row r is code c = low nibble of byte j/2
    (j even) or high nibble (j odd); value = FP4_VALUES[c] · 2^(scale − 127). Scale exponent as
    in the OCP MX spec: floor(log2(amax)) − 2 (2 = emax of E2M1); elements rounded to the
    nearest E2M1 value (ties toward the smaller magnitude), saturated at ±6."""
    e, r, k = w.shape
    v = w.double().reshape(e, r, k // 32, 32)
    amax = v.abs().amax(-1)
    exp = (torch.floor(torch.log2(amax)) - 2).clamp(-127, 127)  # amax 0 → −inf → −127
    scaled = v / torch.exp2(exp)[..., None]
    mag = scaled.abs().clamp(max=6.0)
    code = (mag[..., None] - FP4_MAGNITUDES).abs().argmin(-1)  # first (smaller) on ties
    code = code | torch.where(scaled < 0, 8, 0)  # sign bit 3 (a negative value rounding to 0: −0)
    code = code.to(torch.uint8)
    blocks = code[..., 0::2] | (code[..., 1::2] << 4)
    scales = (exp + 127).to(torch.uint8)
    return blocks.contiguous(), scales.contiguous()


def mxfp4_dequantise(blocks, scales):
    """Ours, written from the format: blocks [E, R, G, 16], scales [E, R, G] → f32 [E, R, G·32]."""
    lut = torch.tensor(FP4_VALUES, dtype=torch.float64)
    lo = lut[(blocks & 0x0F).long()]
    hi = lut[(blocks >> 4).long()]
    vals = torch.stack([lo, hi], dim=-1).reshape(*blocks.shape[:-1], 32)  # lo, hi, lo, hi, ...
    vals = vals * torch.exp2(scales.double() - 127.0)[..., None]
    e, r, g = scales.shape
    return vals.reshape(e, r, g * 32).float()


def check_hf_dequantiser(proj, blocks, scales, dense):
    """transformers' convert_moe_packed_tensors (f32 and its default bf16) against ours."""
    for dtype in (torch.float32, torch.bfloat16):
        hf = convert_moe_packed_tensors(blocks.clone(), scales.clone(), dtype=dtype)
        assert hf.shape == dense.shape, (hf.shape, dense.shape)
        diff = (hf.float() - dense).abs().max().item()
        print(f"  mxfp4 {proj}: blocks {list(blocks.shape)} scales {list(scales.shape)} "
              f"(bytes {scales.min().item()}..{scales.max().item()}) → {list(hf.shape)}; "
              f"convert_moe_packed_tensors({dtype}) vs ours: max |Δ| {diff:.1e}")
        if diff != 0.0:
            sys.exit(f"{proj}: transformers' dequantiser disagrees with ours ({diff:.2e})")


# ---------------------------------------------------------------------------------------------


def raw_router_logits(name, block, x):
    """The raw router logits [T, E] in f32, for blocks that do not return them."""
    flat = x.reshape(-1, x.shape[-1])
    if name == "deepseek_v3":  # DeepseekV3TopkRouter.forward: F.linear in f32, no bias
        return F_.linear(flat.float(), block.gate.weight.float())
    return F_.linear(flat, block.router.weight, block.router.bias)  # GptOssTopKRouter.forward


def run(name, block, x):
    """(output [B, S, d], router logits [B·S, E], extra io tensors) of a block in eval mode."""
    block.eval()
    extra = {}
    with torch.no_grad():
        out = block(x)
        if name == "switch":
            y, (logits, _) = out
            logits = logits.reshape(-1, E)
        elif name == "deepseek_v3":
            y = out  # DeepseekV3MoE.forward returns the hidden states only
            logits = raw_router_logits(name, block, x)
            ids, weights = block.gate(x)
            extra["routing_weights"] = torch.zeros_like(logits).scatter(1, ids, weights)
        elif name.startswith("gpt_oss"):
            y, scores = out  # GptOssMLP returns router_scores, not logits
            logits = raw_router_logits(name, block, x)
            extra["routing_weights"] = scores
        else:
            y, logits = out
    return y, logits, extra


# ---------------------------------------------------------------------------------------------
# The reference: our stacked layout and the forward of the hf-formats.md memo (f64, and f32 to see
# what a second f32 implementation's rounding costs).


def stacked(name, state, dtype=torch.float64):
    """HF state (names relative to the block prefix) → our layout in `dtype`: router `wr` [E, d] (+ `br`
    [E]), W₁ `w1` [E, d, f], W₃ `w3` [E, d, f], W₂ `w2` [E, f, d], biases `b1`, `b3` [E, f],
    `b2` [E, d]; DeepSeek's `bias` [E] and shared `s1`, `s3` [n, d, f], `s2` [n, f, d]."""
    s = {k: v.to(dtype) for k, v in state.items()}
    if name.startswith("gpt_oss"):
        gu = s["experts.gate_up_proj"]  # [E, d, 2f], x @ W; columns interleaved gate, up, gate, ...
        gub = s["experts.gate_up_proj_bias"]  # [E, 2f]
        return {"wr": s["router.weight"], "br": s["router.bias"],
                "w1": gu[:, :, 0::2], "w3": gu[:, :, 1::2], "w2": s["experts.down_proj"],
                "b1": gub[:, 0::2], "b3": gub[:, 1::2], "b2": s["experts.down_proj_bias"]}
    n_exp = sum(1 for k in s if k.endswith(".gate_proj.weight") and k.startswith("experts."))
    st = {"wr": s["gate.weight"]}
    for ours, theirs in (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")):
        # nn.Linear weights are [out, in]: transpose to [in, out]
        st[ours] = torch.stack([s[f"experts.{i}.{theirs}.weight"].T for i in range(n_exp)])
    if name == "deepseek_v3":
        st["bias"] = s["gate.e_score_correction_bias"]
        f = st["w1"].shape[2]
        g = s["shared_experts.gate_proj.weight"].T  # [d, n·f]
        d, nf = g.shape
        n = nf // f
        # hidden unit j of the shared MLP is unit j mod f of shared expert j div f
        st["s1"] = g.reshape(d, n, f).permute(1, 0, 2)
        st["s3"] = s["shared_experts.up_proj.weight"].T.reshape(d, n, f).permute(1, 0, 2)
        st["s2"] = s["shared_experts.down_proj.weight"].T.reshape(n, f, d)
    return st


def top_k(values, k):
    """k rounds of argmax (ties → lower index), best first, as src/router.rs does. [T, k]"""
    v = values.clone()
    ids = []
    for _ in range(k):
        i = v.argmax(1, keepdim=True)
        ids.append(i)
        v.scatter_(1, i, float("-inf"))
    return torch.cat(ids, 1)


def swiglu(x, w1, w3, w2):
    return (F_.silu(x @ w1) * (x @ w3)) @ w2


def oss_swiglu(x, st, e):
    gate = x @ st["w1"][e] + st["b1"][e]
    up = x @ st["w3"][e] + st["b3"][e]
    gate = gate.clamp(max=SWIGLU_LIMIT)
    up = up.clamp(-SWIGLU_LIMIT, SWIGLU_LIMIT)
    return ((up + 1) * (gate * torch.sigmoid(1.702 * gate))) @ st["w2"][e] + st["b2"][e]


def deepseek_choice(scores, bias, n_group, topk_group, k, fill=0.0, grouped=True):
    sel = scores + bias  # [T, E]
    t, e = sel.shape
    if grouped:
        group = sel.reshape(t, n_group, e // n_group).topk(2, dim=-1).values.sum(-1)  # [T, G]
        chosen = top_k(group, topk_group)
        keep = torch.zeros_like(group).scatter(1, chosen, 1.0).repeat_interleave(e // n_group, 1)
        sel = sel.masked_fill(keep == 0, fill)
    return top_k(sel, k)


def reference(name, block, state, x, dtype=torch.float64):
    """Our reading of HF's forward, in the stacked layout: (y [B, S, d], dense weights)."""
    st = stacked(name, state, dtype)
    xt = x.reshape(-1, x.shape[-1]).to(dtype)
    logits = xt @ st["wr"].T
    if name in ("qwen3_moe", "olmoe"):
        probs = torch.softmax(logits, -1)
        ids = top_k(probs, block.top_k)
        gates = probs.gather(1, ids)
        if block.norm_topk_prob:
            gates = gates / gates.sum(-1, keepdim=True)
    elif name == "deepseek_v3":
        cfg = block.config
        scores = torch.sigmoid(logits)
        ids = deepseek_choice(scores, st["bias"], cfg.n_group, cfg.topk_group,
                              cfg.num_experts_per_tok)
        gates = scores.gather(1, ids)
        if cfg.norm_topk_prob:
            gates = gates / (gates.sum(-1, keepdim=True) + 1e-20)
        gates = gates * cfg.routed_scaling_factor
    else:  # gpt-oss
        logits = logits + st["br"]
        ids = top_k(logits, block.router.top_k)
        gates = torch.softmax(logits.gather(1, ids), -1)
    y = torch.zeros_like(xt)
    for j in range(ids.shape[1]):
        for t in range(xt.shape[0]):
            e = ids[t, j].item()
            if name.startswith("gpt_oss"):
                out = oss_swiglu(xt[t : t + 1], st, e)
            else:
                out = swiglu(xt[t : t + 1], st["w1"][e], st["w3"][e], st["w2"][e])
            y[t] += gates[t, j] * out[0]
    if name == "deepseek_v3":
        for i in range(st["s1"].shape[0]):
            y += swiglu(xt, st["s1"][i], st["s3"][i], st["s2"][i])
    dense = torch.zeros_like(logits).scatter(1, ids, gates)
    return y.reshape(x.shape), dense


def diagnostics(name, block, state, x, logits):
    """Prints how far the routing is from ties, and what the format's special parts change."""
    st = stacked(name, state)
    lg = logits.double()
    if name in ("qwen3_moe", "olmoe"):
        p = torch.softmax(lg, -1).sort(-1, descending=True).values
        k = block.top_k
        print(f"  min gap between the k-th and (k+1)-th probability: {(p[:, k - 1] - p[:, k]).min():.4f}")
    elif name == "deepseek_v3":
        cfg = block.config
        s = torch.sigmoid(lg)
        k, ng, tg = cfg.num_experts_per_tok, cfg.n_group, cfg.topk_group
        args = (ng, tg, k)
        ids = deepseek_choice(s, st["bias"], *args).sort(1).values
        flat = deepseek_choice(s, st["bias"], *args, grouped=False).sort(1).values
        nobias = deepseek_choice(s, torch.zeros_like(st["bias"]), *args).sort(1).values
        neginf = deepseek_choice(s, st["bias"], *args, fill=float("-inf")).sort(1).values
        differ = lambda a: int((a != ids).any(1).sum())  # noqa: E731
        print(f"  group limit changes the experts of {differ(flat)}/{len(ids)} tokens "
              f"(vs plain top-{k} of the biased scores)")
        print(f"  e_score_correction_bias changes the experts of {differ(nobias)}/{len(ids)} tokens")
        print(f"  masking the dropped groups with -inf instead of HF's 0.0 changes "
              f"{differ(neginf)}/{len(ids)} tokens; min biased score {(s + st['bias']).min():+.3f}")
        sel = s + st["bias"]
        t, e = sel.shape
        group = sel.reshape(t, ng, e // ng).topk(2, -1).values.sum(-1)  # [T, G]
        keep = torch.zeros_like(group).scatter(1, top_k(group, tg), 1.0).repeat_interleave(e // ng, 1)
        masked = sel.masked_fill(keep == 0, 0.0).sort(-1, descending=True).values
        group = group.sort(-1, descending=True).values
        print(f"  min gaps: group scores {(group[:, tg - 1] - group[:, tg]).min():.4f}, "
              f"k-th/(k+1)-th masked score {(masked[:, k - 1] - masked[:, k]).min():.4f}")
    else:
        k = block.router.top_k
        lv = lg.sort(-1, descending=True).values
        print(f"  min gap between the k-th and (k+1)-th logit: {(lv[:, k - 1] - lv[:, k]).min():.4f}")
        xt = x.reshape(-1, x.shape[-1]).double()
        ids = top_k(lg, k)
        routed = all_ = 0
        total = 0
        for t in range(xt.shape[0]):
            for e in range(st["w1"].shape[0]):
                gate = xt[t] @ st["w1"][e] + st["b1"][e]
                up = xt[t] @ st["w3"][e] + st["b3"][e]
                hits = int((gate > SWIGLU_LIMIT).sum() + (up.abs() > SWIGLU_LIMIT).sum())
                all_ += hits
                if e in ids[t].tolist():
                    routed += hits
                    total += 2 * gate.numel()
        print(f"  clamp at {SWIGLU_LIMIT} hit by {routed} of the {total} gate/up pre-activations "
              f"of the routed (token, expert) pairs ({all_} over all pairs)")


def write(directory, only=None):
    directory.mkdir(parents=True, exist_ok=True)
    for seed, (name, make) in enumerate(BLOCKS.items()):
        if only and name not in only:
            continue
        torch.manual_seed(seed)
        block, prefix = make()
        # Router weights large enough that the top-k choices are not near ties.
        for pname, p in block.named_parameters():
            if pname.endswith("gate.weight") or "router" in pname:
                p.data.normal_(0.0, 0.5)
        packed = FINISH[name](block) if name in FINISH else {}
        x = torch.randn(BATCH, SEQ, MX_D if name == "gpt_oss_mxfp4" else D)
        y, logits, extra = run(name, block, x)
        state = block.state_dict()
        weights = {f"{prefix}.{k}": v.contiguous() for k, v in state.items()}
        if packed:  # MXFP4: the Hub checkpoint's packed experts, router and biases in bf16
            weights = {k: v.bfloat16() for k, v in weights.items()
                       if not k.endswith(("experts.gate_up_proj", "experts.down_proj"))}
            weights.update({f"{prefix}.{k}": v for k, v in packed.items()})
        save_file(weights, directory / f"{name}.safetensors", metadata={"format": "pt"})
        io = {"input": x, "output": y.contiguous(), "router_logits": logits.contiguous()}
        io.update({k: v.contiguous() for k, v in extra.items()})
        save_file(io, directory / f"{name}_io.safetensors", metadata={"format": "pt"})
        print(f"{name}: {len(weights)} tensors under {prefix}, |y|max {y.abs().max():.3f}")
        if name in ("switch", "mixtral", "qwen2_moe"):
            continue
        diagnostics(name, block, state, x, logits)
        ref32, _ = reference(name, block, state, x, torch.float32)
        ref, dense = reference(name, block, state, x)
        dy = (ref - y.double()).abs().max().item()
        dy32 = (ref32 - y).abs().max().item()
        msg = f"  reference (stacked layout) vs HF: max |Δ output| {dy:.2e} (f64), {dy32:.2e} (f32)"
        if "routing_weights" in extra:
            dw = (dense - extra["routing_weights"].double()).abs().max().item()
            msg += f", |Δ routing weights| {dw:.2e}"
            dy = max(dy, dw)
        print(msg)
        dy = max(dy, dy32)
        if dy > 1e-6:
            sys.exit(f"{name}: the reference disagrees with HF ({dy:.2e})")


def check(directory, fixtures):
    worst = 0.0
    for name, make in BLOCKS.items():
        path = directory / f"{name}.safetensors"
        if not path.exists():
            continue
        block, prefix = make()
        state = {k[len(prefix) + 1 :]: v for k, v in load_file(path).items()}
        for proj in ("gate_up_proj", "down_proj"):
            if f"experts.{proj}_blocks" in state:  # packed MXFP4: transformers' dequantiser
                blocks = state.pop(f"experts.{proj}_blocks")
                scales = state.pop(f"experts.{proj}_scales")
                state[f"experts.{proj}"] = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)
        block.load_state_dict(state, strict=True)
        io = load_file(fixtures / f"{name}_io.safetensors")
        y, logits, extra = run(name, block, io["input"])
        dy = (y - io["output"]).abs().max().item()
        dl = (logits - io["router_logits"]).abs().max().item()
        worst = max(worst, dy, dl)
        msg = f"{name}: HF loads {path} (strict); max |Δ output| {dy:.2e}, |Δ router logits| {dl:.2e}"
        if "routing_weights" in io:
            dw = (extra["routing_weights"] - io["routing_weights"]).abs().max().item()
            worst = max(worst, dw)
            msg += f", |Δ routing weights| {dw:.2e}"
        print(msg)
    if worst > 1e-5:
        sys.exit(f"max difference {worst:.2e} > 1e-5")


if __name__ == "__main__":
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=pathlib.Path)
    parser.add_argument("--check", type=pathlib.Path, metavar="EXPORTED",
                        help="check the exported files in EXPORTED against the fixtures in dir")
    parser.add_argument("--only", nargs="+", choices=list(BLOCKS), metavar="NAME",
                        help=f"write only these fixtures (of {', '.join(BLOCKS)})")
    args = parser.parse_args()
    if args.check:
        check(args.check, args.dir)
    else:
        write(args.dir, args.only)
