"""PyTorch peer of the switch-moe language model (src/lm.rs, `examples/train.rs --preset cpu`):
training throughput and KV-cache decoding speed, float32 on CPU.

    PY="$(benches/peers/setup.sh | tail -n 1)"      # venv with torch 2.9.0 from PyPI
    "$PY" benches/peers/lm_peer.py --check                          # self-tests, then exit
    "$PY" benches/peers/lm_peer.py train --tokens windows.u32 --threads 2 --csv loss.csv --json
    "$PY" benches/peers/lm_peer.py train --steps 20 --threads 1 [--compile] --json   # synthetic
    "$PY" benches/peers/lm_peer.py decode --new-tokens 500 --threads 1 --json         # random model
    "$PY" benches/peers/lm_peer.py both --steps 500 --new-tokens 500 --json   # train, then decode

The model (defaults = the cpu preset): token + learned position embeddings (N(0, 1)); L layers,
layer i sparse when (i + 1) % moe_every == 0; each layer pre-norm (or post-norm with
--post-norm) self-attention with burn-nn 0.21's semantics (q/k/v/out Linear with biases, scores
q.k/sqrt(d_k), dropout ON THE SCORES before the causal mask (-1e4) and softmax, no dropout after
it; dropout on both residual branches); dense FFN Linear(d, f) -> ReLU -> dropout -> Linear(f, d)
with biases (burn-nn's PositionWiseFeedForward, activation = the experts'); Linear weights and
biases U(+-1/sqrt(fan_in)) (burn's Kaiming uniform, gain 1/sqrt(3)). Sparse FFN: router
[d, E] in f32, input jitter x * U[1-eps, 1+eps] in training, softmax, top-k (gates renormalised
when k > 1), capacity C = clamp(ceil(cf * T * k / E), 1, T) over the flat batch T = B*S (cf 1.25
train, 2.0 eval; dropless: C = the largest load), slots in priority order (all first choices
in token order, then second choices), dropped assignments contribute 0; experts ReLU(x W1) ->
expert dropout -> W2 without biases, run grouped: gather to [E, C, d], two torch.bmm, gather
back. Router and experts ~ truncated normal, std sqrt(0.1 / fan_in), cut at +-2 std. Final
LayerNorm (eps 1e-5), LM head d -> V without bias. Loss = CE + alpha * mean_layers(E * sum f_i
P_i) + beta * mean_layers(mean logsumexp(router logits)^2).

Training: AdamW (betas 0.9/0.999, eps 1e-5 as burn's, decoupled weight decay on every
parameter), gradients clipped by norm PER PARAMETER TENSOR (burn-optim's GradientClipping::Norm
is applied to each tensor separately), lr warm-up min(warmup, steps/2) steps from lr/warmup,
then cosine to min_lr_ratio * lr at --steps. Tokens: --tokens FILE, little-endian uint32
[steps, batch, seq+1] (inputs [..., :-1], targets [..., 1:]); without it a seeded synthetic
stream (a random sparse Markov chain, so the loss can fall). Steady state = all steps after the
first --skip (default 3; compilation happens there with --compile).

Decoding: batch 1, eval mode, dropless routing, KV cache (static per-layer buffers, only the
new query attends), generate.rs's context rule (past max_seq_len tokens, restart from the last
max_seq_len/2 and rebuild the cache in one pass), seeded top-k 40 / temperature 0.8 sampling as
generate.rs's defaults (or --greedy). tokens/s counts the steps after the prompt pass
(cache rebuilds included). Without dropout the attention is F.scaled_dot_product_attention.

--check: the grouped MoE against a per-token Python loop (k = 1 and 2, tokens dropped; outputs,
aux, z and the gradients of input and weights to 1e-5); the burn-style attention (score
dropout at p ~ 0) against SDPA; the KV-cache decode against a full
forward of the same window at every step (a window restart included, to 1e-5); the parameter
count against SwitchLmConfig::num_params. --json: one line with tokens_per_s (steady state),
ms_per_step_median, first_step_ms, final_loss/ce/aux/z, compile ("off", "on ...", or "failed:
<reason>" and eager), decode_tokens_per_s, decode_ms_per_token_median, prompt_ms.
"""

import argparse
import csv
import json
import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TRUNC_UNIT_STD = 0.8796256610342398  # std of a unit normal cut at +-2 (src/init.rs)


def trunc_normal_(w, scale, fan_in):
    """Switch init (src/init.rs): truncated normal whose std after the cut is sqrt(scale/fan_in)."""
    s = math.sqrt(scale / fan_in) / TRUNC_UNIT_STD
    return nn.init.trunc_normal_(w, 0.0, s, -2 * s, 2 * s)


def linear(d_in, d_out, bias=True):
    """burn-nn Linear: weight and bias U(+-1/sqrt(d_in)) (Kaiming uniform, gain 1/sqrt(3))."""
    lin, bound = nn.Linear(d_in, d_out, bias=bias), 1 / math.sqrt(d_in)
    for p in lin.parameters():
        nn.init.uniform_(p, -bound, bound)
    return lin


class KVCache:
    """Static per-layer key/value buffers [B, H, S_max, d_k] and the number of cached positions."""

    def __init__(self, n_layers, b, h, s_max, dk):
        self.k = [torch.zeros(b, h, s_max, dk) for _ in range(n_layers)]
        self.v = [torch.zeros(b, h, s_max, dk) for _ in range(n_layers)]
        self.len = 0


class Attention(nn.Module):
    def __init__(self, d, h, p, s_max):
        super().__init__()
        self.h, self.dk, self.p = h, d // h, p
        self.qkv, self.out = linear(d, 3 * d), linear(d, d)  # fused q/k/v, each part as burn's
        self.register_buffer("mask", torch.ones(s_max, s_max).triu(1).bool(), persistent=False)

    def forward(self, x, cache=None, layer=0):
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.h, self.dk).permute(2, 0, 3, 1, 4)  # [B, H, S, dk]
        if cache is not None:  # append the new positions, attend to all cached ones
            n = cache.len
            cache.k[layer][:, :, n:n + s], cache.v[layer][:, :, n:n + s] = k, v
            k, v = cache.k[layer][:, :, :n + s], cache.v[layer][:, :, :n + s]
        if self.training and self.p > 0:  # burn-nn: dropout on the raw scores, then mask, softmax
            scores = F.dropout(q @ k.transpose(-2, -1) / math.sqrt(self.dk), self.p, True)
            ctx = scores.masked_fill(self.mask[:s, :s], -1e4).softmax(-1) @ v
        else:  # no dropout: the same function; a single new query sees every cached key
            ctx = F.scaled_dot_product_attention(q, k, v, is_causal=s > 1)
        return self.out(ctx.transpose(1, 2).reshape(b, s, d))


class DenseFFN(nn.Module):
    """burn-nn PositionWiseFeedForward with ReLU: Linear -> ReLU -> dropout -> Linear."""

    def __init__(self, d, f, p):
        super().__init__()
        self.inner, self.outer, self.p = linear(d, f), linear(f, d), p

    def forward(self, x):
        return self.outer(F.dropout(F.relu(self.inner(x)), self.p, self.training)), None, None


class SwitchMoE(nn.Module):
    """Switch FFN (src/moe.rs, router.rs, dispatch.rs, experts.rs, stats.rs), grouped."""

    def __init__(self, d, f, e, k, cf, eval_cf, jitter, p_expert, init_scale=0.1):
        super().__init__()
        self.e, self.k, self.cf, self.eval_cf = e, k, cf, eval_cf
        self.jitter, self.p_expert, self.dropless = jitter, p_expert, False
        self.router = nn.Parameter(trunc_normal_(torch.empty(d, e), init_scale, d))  # x @ Wr
        self.w_in = nn.Parameter(trunc_normal_(torch.empty(e, d, f), init_scale, d))
        self.w_out = nn.Parameter(trunc_normal_(torch.empty(e, f, d), init_scale, f))

    def route(self, x):
        """f32 logits and probs [T, E], chosen experts and gates [T, k]."""
        xr = x.float()
        if self.training and self.jitter > 0:
            xr = xr * torch.empty_like(xr).uniform_(1 - self.jitter, 1 + self.jitter)
        logits = xr @ self.router.float()
        probs = logits.softmax(-1)
        ids = probs.argmax(-1, keepdim=True) if self.k == 1 else probs.topk(self.k, -1).indices
        gates = probs.gather(1, ids)
        if self.k > 1:
            gates = gates / gates.sum(-1, keepdim=True)
        return logits, probs, ids, gates

    def capacity(self, t, onehot):
        if self.dropless:  # host read, as the Rust dropless mode
            return max(1, min(int(onehot.sum(0).max()), t))
        cf = self.cf if self.training else self.eval_cf
        return min(max(math.ceil(cf * t * self.k / self.e), 1), t)

    def forward(self, x):
        b, s, d = x.shape
        t, e, k = b * s, self.e, self.k
        x = x.reshape(t, d)
        logits, probs, ids, gates = self.route(x)
        expert = ids.t().reshape(-1)  # [k*T], choice-major: row j*T + t is token t's j-th choice
        onehot = F.one_hot(expert, e)  # [k*T, E]
        c = self.capacity(t, onehot)
        slot = (onehot.cumsum(0) * onehot).sum(-1) - 1  # position in the expert's queue
        spare = e * c  # dropped assignments and empty slots use a spare zero row
        rows = torch.where(slot < c, expert * c + slot, torch.full_like(slot, spare))
        src = torch.full((spare + 1,), t, dtype=torch.long)  # buffer row -> token (t: empty)
        src[rows] = torch.arange(k * t) % t
        buf = torch.cat([x, x.new_zeros(1, d)])[src[:spare]].view(e, c, d)
        hid = F.dropout(F.relu(torch.bmm(buf, self.w_in)), self.p_expert, self.training)
        y = torch.bmm(hid, self.w_out).view(spare, d)
        y = torch.cat([y, y.new_zeros(1, d)])[rows] * gates.t().reshape(-1, 1).to(y.dtype)
        y = y.view(k, t, d).sum(0)
        counts = onehot[:t].sum(0).float()  # first choices before capacity
        f_frac = counts / counts.sum().clamp_min(1)
        aux = e * (f_frac * probs.mean(0)).sum()
        z = torch.logsumexp(logits, -1).square().mean()
        return y.view(b, s, d), aux, z


class Block(nn.Module):
    """src/layer.rs (sparse) / burn-nn TransformerEncoderLayer (dense)."""

    def __init__(self, a, sparse):
        super().__init__()
        d = a.d_model
        self.norm_attn = nn.LayerNorm(d, eps=a.layer_norm_eps)
        self.norm_ffn = nn.LayerNorm(d, eps=a.layer_norm_eps)
        self.attn = Attention(d, a.heads, a.dropout, a.seq)
        self.ffn = (SwitchMoE(d, a.d_ff, a.experts, a.top_k, a.capacity_factor,
                              a.eval_capacity_factor, a.jitter, a.expert_dropout)
                    if sparse else DenseFFN(d, a.d_ff, a.dropout))
        self.p, self.norm_first = a.dropout, not a.post_norm

    def forward(self, x, cache=None, layer=0):
        drop = lambda y: F.dropout(y, self.p, self.training)  # noqa: E731
        if self.norm_first:
            x = x + drop(self.attn(self.norm_attn(x), cache, layer))
            y, aux, z = self.ffn(self.norm_ffn(x))
            return x + drop(y), aux, z
        x = self.norm_attn(x + drop(self.attn(x, cache, layer)))
        y, aux, z = self.ffn(x)
        return self.norm_ffn(x + drop(y)), aux, z


class SwitchLM(nn.Module):
    """src/lm.rs: embeddings, causal encoder, final LayerNorm, head without bias."""

    def __init__(self, a):
        super().__init__()
        self.a = a
        self.tok = nn.Embedding(a.vocab, a.d_model)  # N(0, 1), as burn-nn's Embedding
        self.pos = nn.Embedding(a.seq, a.d_model)
        self.blocks = nn.ModuleList(Block(a, (i + 1) % a.moe_every == 0) for i in range(a.layers))
        self.norm = nn.LayerNorm(a.d_model, eps=a.layer_norm_eps)
        self.head = None if a.tie_embeddings else linear(a.d_model, a.vocab, bias=False)
        if a.tie_embeddings:  # SwitchLmConfig::tie_embeddings: unit-scale logits at init
            nn.init.normal_(self.tok.weight, 0.0, math.sqrt(1 / a.d_model))

    def forward(self, tokens, cache=None):
        """Logits [B, S, V] and mean aux / z over the sparse layers. With a cache: tokens are the
        positions after the cached ones, and only the last position's logits [B, V] come back."""
        start = cache.len if cache is not None else 0
        pos = torch.arange(start, start + tokens.shape[1])
        x = self.tok(tokens) + self.pos(pos)
        aux, z = [], []
        for i, blk in enumerate(self.blocks):
            x, a_i, z_i = blk(x, cache, i)
            if a_i is not None:
                aux.append(a_i)
                z.append(z_i)
        if cache is not None:
            cache.len += tokens.shape[1]
            x = x[:, -1]
        x = self.norm(x)
        logits = self.head(x) if self.head is not None else F.linear(x, self.tok.weight)
        return logits, torch.stack(aux).mean(), torch.stack(z).mean()

    def new_cache(self, b=1):
        a = self.a
        return KVCache(a.layers, b, a.heads, a.seq, a.d_model // a.heads)

    def set_dropless(self, on):
        for m in self.modules():
            if isinstance(m, SwitchMoE):
                m.dropless = on


def rust_num_params(a):
    """SwitchLmConfig::num_params (src/lm.rs) for this config."""
    d, f, e, v = a.d_model, a.d_ff, a.experts, a.vocab
    attention = 4 * (d * d + d) + 2 * 2 * d
    dense, sparse = attention + d * f + f + f * d + d, attention + d * e + e * 2 * d * f
    layers = sum(sparse if (i + 1) % a.moe_every == 0 else dense for i in range(a.layers))
    return v * d + a.seq * d + layers + 2 * d + (0 if a.tie_embeddings else d * v)


def lr_at(t, a, total):
    """WarmupCosineLr::lr_at (src/train/schedule.rs), t 1-based; warm-up capped at total/2."""
    warmup, min_lr = min(a.warmup, total // 2), a.lr * a.min_lr_ratio
    if t <= warmup:
        return a.lr * t / max(warmup, 1)
    progress = min((t - warmup) / max(total - warmup, 1), 1.0)
    return min_lr + (a.lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def clip_per_tensor_(params, max_norm):
    """burn-optim GradientClipping::Norm: each tensor g *= min(1, max / (|g| + f32 tiny))."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch._foreach_norm(grads)
    tiny = torch.finfo(torch.float32).tiny
    torch._foreach_mul_(grads, [(max_norm / (n + tiny)).clamp(max=1.0) for n in norms])


def token_stream(a):
    """[steps, B, S+1] int64: the --tokens file, or a seeded synthetic Markov-chain stream."""
    shape = (a.batch, a.seq + 1)
    if a.tokens:
        raw = np.fromfile(a.tokens, dtype="<u4")
        if raw.size % (shape[0] * shape[1]) or raw.size // (shape[0] * shape[1]) < a.steps:
            raise SystemExit(f"{a.tokens}: {raw.size} tokens, not [>= {a.steps}, {shape[0]}, "
                             f"{shape[1]}] (--steps, --batch, --seq + 1)")
        return torch.from_numpy(raw.astype(np.int64)).view(-1, *shape)[:a.steps]
    g = torch.Generator().manual_seed(a.seed + 1)
    table = torch.randint(a.vocab, (a.vocab, 4), generator=g)  # 4 possible successors per token
    out = torch.empty(a.steps * a.batch, a.seq + 1, dtype=torch.long)
    out[:, 0] = torch.randint(a.vocab, (a.steps * a.batch,), generator=g)
    for i in range(1, a.seq + 1):
        out[:, i] = table[out[:, i - 1], torch.randint(4, (a.steps * a.batch,), generator=g)]
    return out.view(a.steps, *shape)


def train(model, a, res):
    data = token_stream(a)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-5,
                            weight_decay=a.weight_decay)
    fwd, res["compile"] = model, "off"
    if a.compile:
        # Inductor's own per-element CPU RNG made dropout ~5x slower than eager's bernoulli_
        # (a 1-thread step took 1.4 s instead of 0.63 s): keep aten's random ops in the graph.
        import torch._inductor.config as inductor_config
        inductor_config.fallback_random = True
        fwd, res["compile"] = torch.compile(model), "on (inductor, fallback_random)"
    params = list(model.parameters())
    model.train()
    rows, times = [], []
    for step in range(1, a.steps + 1):
        inp, tgt = data[step - 1, :, :-1].contiguous(), data[step - 1, :, 1:].contiguous()

        def forward_backward(fwd):
            logits, aux, z = fwd(inp)
            ce = F.cross_entropy(logits.reshape(-1, a.vocab), tgt.reshape(-1))
            loss = ce + a.aux_coef * aux + a.z_coef * z
            opt.zero_grad(set_to_none=True)
            loss.backward()
            return loss, ce, aux, z

        t0 = time.perf_counter()
        try:
            loss, ce, aux, z = forward_backward(fwd)
        except Exception as err:  # torch.compile failed (no compiler, unsupported op, ...)
            if fwd is model:
                raise
            reason = (str(err).strip().splitlines() or [""])[0][:200]
            res["compile"] = f"failed: {type(err).__name__}: {reason}"
            fwd = model
            loss, ce, aux, z = forward_backward(fwd)
        clip_per_tensor_(params, a.grad_clip)
        lr = lr_at(step, a, a.steps)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        vals = torch.stack([loss, ce, aux, z]).tolist()  # one read, as the Learner's metrics
        times.append(time.perf_counter() - t0)
        rows.append([step, lr, *vals, times[-1] * 1e3])
        if not a.json and (step % 50 == 0 or step == a.steps):
            print(f"step {step:4d}  lr {lr:.2e}  loss {vals[0]:.4f}  ce {vals[1]:.4f}  "
                  f"aux {vals[2]:.4f}  z {vals[3]:.4f}  {times[-1] * 1e3:.1f} ms")
    if a.csv:
        with open(a.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["step", "lr", "loss", "ce", "aux", "z", "ms"])
            w.writerows(rows)
    skip = min(a.skip, len(times) - 1)
    steady = times[skip:]
    res.update(steps=a.steps, timed_steps=f"{skip + 1}..{len(times)}",
               tokens_per_s=round(a.batch * a.seq * len(steady) / sum(steady), 1),
               ms_per_step_median=round(statistics.median(steady) * 1e3, 2),
               first_step_ms=round(times[0] * 1e3, 1), final_loss=round(rows[-1][2], 4),
               final_ce=round(rows[-1][3], 4), final_aux=round(rows[-1][4], 4),
               final_z=round(rows[-1][5], 4),
               data=a.tokens or f"synthetic (seed {a.seed + 1})")


@torch.inference_mode()
def decode(model, prompt, n, a, verify=None):
    """generate.rs's loop: n new tokens after `prompt`; returns the tokens and step times [s]."""
    model.eval()
    model.set_dropless(True)
    g = torch.Generator().manual_seed(a.seed)
    tokens, start, keep, cache, times = list(prompt), 0, max(a.seq // 2, 1), None, []
    for _ in range(n):
        t0 = time.perf_counter()
        if len(tokens) - start > a.seq:  # window full: restart from the last seq/2 tokens
            start, cache = len(tokens) - keep, None
        if cache is None:
            cache = model.new_cache(1)
            logits = model(torch.tensor([tokens[start:]]), cache)[0][0]
        else:
            logits = model(torch.tensor([tokens[-1:]]), cache)[0][0]
        if a.greedy:
            nxt = int(logits.argmax())
        else:  # top-k 40, temperature 0.8 (SamplingConfig::default)
            v, i = logits.topk(min(a.top_k_sample, logits.numel()))
            nxt = int(i[torch.multinomial((v / a.temperature).softmax(-1), 1, generator=g)])
        times.append(time.perf_counter() - t0)
        if verify is not None:
            verify(tokens[start:], logits)
        tokens.append(nxt)
    return tokens, times


def run_checks(a):
    """The grouped MoE against a naive per-token loop; KV-cache decode against full forwards."""
    tol, out = 1e-5, {}
    assert sum(p.numel() for p in SwitchLM(a).parameters()) == rust_num_params(a)
    for k in (1, 2):
        torch.manual_seed(k)
        moe = SwitchMoE(32, 64, 8, k, 1.0, 2.0, jitter=0.0, p_expert=0.0).train()
        x = torch.randn(2, 96, 32)
        r = torch.randn(2, 96, 32)
        res = []
        for naive in (False, True):
            xi = x.clone().requires_grad_(True)
            moe.zero_grad()
            y, aux, z = naive_moe(moe, xi) if naive else moe(xi)
            ((y * r).sum() + aux + z).backward()
            res.append([y, aux, z, xi.grad, moe.router.grad, moe.w_in.grad, moe.w_out.grad])
        diff = max((u - v).abs().max().item() for u, v in zip(*res))
        assert diff <= tol, f"grouped vs naive MoE (k={k}): max diff {diff:.3g} > {tol:g}"
        out[f"moe_top{k}_max_diff"] = diff
    torch.manual_seed(0)
    attn, x = Attention(a.d_model, a.heads, 1e-12, a.seq), torch.randn(2, a.seq, a.d_model)
    diff = (attn.train()(x) - attn.eval()(x)).abs().max().item()  # burn-style path vs SDPA
    assert diff <= tol, f"attention with score dropout ~0 vs SDPA: max diff {diff:.3g} > {tol:g}"
    out["attention_vs_sdpa_max_diff"] = diff
    model, worst = SwitchLM(a), [0.0]

    def verify(window, logits):
        full = model(torch.tensor([window]))[0][0, -1]
        worst[0] = max(worst[0], (full - logits).abs().max().item())

    n_prompt = a.seq * 3 // 4 + 1  # then seq/2 steps: one restart from the last seq/2 tokens
    decode(model, torch.randint(a.vocab, (n_prompt,)).tolist(), a.seq // 2, a, verify)
    assert worst[0] <= tol, f"KV-cache vs full forward: max diff {worst[0]:.3g} > {tol:g}"
    out["decode_vs_full_max_diff"] = worst[0]
    return out


def naive_moe(moe, x):
    """Reference Switch FFN: a Python loop over (choice, token) that fills expert slots in
    order, then one FFN per kept assignment."""
    b, s, d = x.shape
    t = b * s
    xf = x.reshape(t, d)
    logits, probs, ids, gates = moe.route(xf)
    c = moe.capacity(t, F.one_hot(ids.t().reshape(-1), moe.e))
    fill, y = [0] * moe.e, [xf.new_zeros(d) for _ in range(t)]
    for j in range(moe.k):
        for i in range(t):
            e = int(ids[i, j])
            if fill[e] < c:
                fill[e] += 1
                y[i] = y[i] + gates[i, j] * (F.relu(xf[i] @ moe.w_in[e]) @ moe.w_out[e])
    f_frac = F.one_hot(ids[:, 0], moe.e).float().mean(0)
    aux = moe.e * (f_frac * probs.mean(0)).sum()
    return torch.stack(y).view(b, s, d), aux, torch.logsumexp(logits, -1).square().mean()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", nargs="?", choices=["train", "decode", "both"], default="train")
    p.add_argument("--check", action="store_true", help="run the self-tests and exit")

    def arg(name, typ, default, h=None):
        p.add_argument(name, type=typ, default=default, help=h)

    for name, typ, default in [("--d-model", int, 128), ("--d-ff", int, 512), ("--layers", int, 4),
                               ("--heads", int, 4), ("--moe-every", int, 2),
                               ("--experts", int, 8), ("--top-k", int, 1),
                               ("--capacity-factor", float, 1.25),
                               ("--eval-capacity-factor", float, 2.0), ("--jitter", float, 0.01),
                               ("--expert-dropout", float, 0.1), ("--dropout", float, 0.1),
                               ("--layer-norm-eps", float, 1e-5), ("--aux-coef", float, 0.01),
                               ("--z-coef", float, 0.001), ("--seq", int, 128),
                               ("--batch", int, 32), ("--vocab", int, 1024), ("--lr", float, 2e-3),
                               ("--min-lr-ratio", float, 0.1), ("--warmup", int, 50),
                               ("--weight-decay", float, 0.01), ("--grad-clip", float, 1.0),
                               ("--steps", int, 500), ("--seed", int, 42), ("--threads", int, 1)]:
        arg(name, typ, default)
    p.add_argument("--post-norm", action="store_true", help="norm_first = false")
    p.add_argument("--tie-embeddings", action="store_true",
                   help="head = token embeddings^T, embeddings ~ N(0, 1/d) (tie_embeddings)")
    arg("--tokens", str, None, "uint32 LE [steps, batch, seq+1]; default: synthetic")
    arg("--csv", str, None, "per-step losses to this file")
    arg("--skip", int, 3, "steps left out of the steady-state timing")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (train)")
    arg("--new-tokens", int, 500)
    arg("--prompt-len", int, 4, "prompt tokens (first window of --tokens, else random)")
    p.add_argument("--greedy", action="store_true", help="argmax instead of top-k sampling")
    arg("--top-k-sample", int, 40)
    arg("--temperature", float, 0.8)
    p.add_argument("--json", action="store_true", help="print one JSON line")
    a = p.parse_args()

    try:  # must come before any parallel work
        torch.set_num_interop_threads(a.threads)
    except RuntimeError:
        pass
    torch.set_num_threads(a.threads)
    if a.check:
        res = run_checks(a)
        print(json.dumps(res) if a.json else "\n".join(f"{k}: {v:.3g}" for k, v in res.items()))
        return
    torch.manual_seed(a.seed)
    model = SwitchLM(a)
    res = {"torch": torch.__version__, "threads": torch.get_num_threads(), "mode": a.mode,
           "params": sum(p.numel() for p in model.parameters())}
    if a.mode in ("train", "both"):
        train(model, a, res)
    if a.mode in ("decode", "both"):
        g = torch.Generator().manual_seed(a.seed + 2)
        prompt = (np.fromfile(a.tokens, dtype="<u4", count=a.prompt_len).astype(np.int64)
                  if a.tokens else torch.randint(a.vocab, (a.prompt_len,), generator=g)).tolist()
        _, times = decode(model, prompt, a.new_tokens, a)
        after = times[1:] or times
        res.update(new_tokens=a.new_tokens, prompt_len=a.prompt_len,
                   sampling="greedy" if a.greedy
                   else f"top-{a.top_k_sample} T={a.temperature} seed {a.seed}",
                   decode_tokens_per_s=round(len(after) / sum(after), 1),
                   decode_ms_per_token_median=round(statistics.median(after) * 1e3, 3),
                   prompt_ms=round(times[0] * 1e3, 2), decode_total_s=round(sum(times), 3))
    if a.json:
        print(json.dumps(res))
    else:
        print("\n".join(f"{k}: {v}" for k, v in res.items()))


if __name__ == "__main__":
    main()
