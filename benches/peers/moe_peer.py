"""PyTorch peer of `cargo bench --bench moe`: a Switch MoE layer and its dense floor, float32 on CPU.

    PY="$(benches/peers/setup.sh | tail -n 1)"      # venv with torch 2.9.0 from PyPI
    "$PY" benches/peers/moe_peer.py --tokens 2048 --d-model 256 --d-ff 1024 --experts 8 \
        --top-k 1 --capacity-factor 1.25 --threads 1 --reps 5 --warmup 1 [--json]

Three layers on the same input x ~ N(0, 1) of shape [T, d]:

- dense:   Linear(d, f) -> ReLU -> Linear(f, d), no biases: the floor of a top-1 MoE (same FLOPs).
- hf:      the MoE written the way HF transformers' SwitchTransformersSparseMLP does it: a Python
           loop over the experts, each selecting its tokens with a boolean mask, running its own
           FFN and writing the result back.
- grouped: the same MoE batched: tokens gathered into an [E, C, d] buffer (zeros in empty slots),
           two torch.bmm with stacked weights [E, d, f] and [E, f, d], outputs gathered back.

Both MoEs share the router and routing: router Linear(d, E) in float32, softmax, top-k (gates
renormalised over the k choices when k > 1), capacity C = ceil(cf * T * k / E) slots per expert,
slots claimed in priority order (every token's first choice before any second choice, then by
position: a cumsum of the one-hot choices); assignments past capacity are dropped and contribute
zero (HF instead passes a dropped token through as gate * x; zero is what switch-moe does and
what the grouped layer gives, so the two MoEs are comparable and checked against each other).
Weights ~ N(0, 0.1 / fan_in) (Switch Transformer init). The hf and grouped layers get the same
weights; their outputs and input gradients are asserted equal to 1e-5 once per run.

Times are medians in ms over --reps after --warmup runs: forward under torch.no_grad, and
forward + backward of loss = output.sum() into the input and all parameters.
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


def init_(w, fan_in):
    """Switch Transformer init: N(0, 0.1 / fan_in)."""
    with torch.no_grad():
        return w.normal_(0.0, math.sqrt(0.1 / fan_in))


def ffn(d, f):
    net = nn.Sequential(nn.Linear(d, f, bias=False), nn.ReLU(), nn.Linear(f, d, bias=False))
    init_(net[0].weight, d)
    init_(net[2].weight, f)
    return net


def route(router, x, k, capacity):
    """Top-k routing with capacity. Assignments are choice-major ([k*T], row r*T + t is token t's
    r-th choice). Returns the kept one-hot mask [k*T, E] (bool), the gates [k*T] and each
    assignment's slot in its expert [k*T] (meaningful where kept)."""
    probs = F.softmax(router(x).float(), dim=-1)  # [T, E]
    gates, experts = probs.topk(k, dim=-1)  # [T, k]
    if k > 1:
        gates = gates / gates.sum(-1, keepdim=True)
    onehot = F.one_hot(experts.t().reshape(-1), probs.shape[-1])  # [k*T, E]
    priority = onehot.cumsum(0)  # 1-based position in the expert's queue
    mask = (onehot * (priority <= capacity)).bool()
    slot = (priority * onehot).sum(-1) - 1
    return mask, gates.t().reshape(-1), slot


class MoE(nn.Module):
    """Switch MoE with per-expert FFN modules (hf) and stacked weights (grouped) that hold the
    same values, so that both forwards can run and be compared on one set of weights."""

    def __init__(self, d, f, e, k, cf, grouped):
        super().__init__()
        self.k, self.cf, self.grouped = k, cf, grouped
        self.router = nn.Linear(d, e, bias=False)
        init_(self.router.weight, d)
        experts = [ffn(d, f) for _ in range(e)]
        if grouped:  # [E, d, f] and [E, f, d]: x @ W, the transposes of Linear's weights
            self.w1 = nn.Parameter(torch.stack([n[0].weight.t() for n in experts]).contiguous())
            self.w2 = nn.Parameter(torch.stack([n[2].weight.t() for n in experts]).contiguous())
        else:
            self.experts = nn.ModuleList(experts)

    def forward(self, x):
        t, d = x.shape
        e, k = self.router.out_features, self.k
        capacity = math.ceil(self.cf * t * k / e)
        mask, gates, slot = route(self.router, x, k, capacity)
        if self.grouped:
            return self._grouped(x, mask, gates, slot, capacity)
        # HF: a per-expert loop over the experts that received tokens (a host read), each
        # selecting its assignments with a boolean mask.
        xs = x.repeat(k, 1)  # [k*T, d], choice-major like the mask
        out = x.new_zeros(k * t, d)
        for i in torch.nonzero(mask.sum(0), as_tuple=True)[0].tolist():
            sel = mask[:, i]
            out[sel] = self.experts[i](xs[sel])
        return (gates.unsqueeze(-1) * out).view(k, t, d).sum(0)

    def _grouped(self, x, mask, gates, slot, capacity):
        t, d = x.shape
        e, k = self.w1.shape[0], self.k
        kept = mask.any(-1)
        expert = mask.float().argmax(-1)
        spare = e * capacity  # dropped assignments and empty slots point at a spare zero row
        rows = torch.where(kept, expert * capacity + slot, torch.full_like(slot, spare))  # [k*T]
        token = torch.arange(k * t) % t
        src = torch.full((spare + 1,), t, dtype=torch.long)  # buffer row -> token (t = empty)
        src[rows] = token
        xz = torch.cat([x, x.new_zeros(1, d)])
        buf = xz[src[:spare]].view(e, capacity, d)
        y = torch.bmm(F.relu(torch.bmm(buf, self.w1)), self.w2).view(spare, d)
        y = torch.cat([y, y.new_zeros(1, d)])[rows]  # [k*T, d], zero where dropped
        return (gates.unsqueeze(-1) * y).view(k, t, d).sum(0)


def median_ms(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench(model, x, warmup, reps):
    def fwd():
        with torch.no_grad():
            model(x)

    def fb():
        x.grad = None
        for p in model.parameters():
            p.grad = None
        model(x).sum().backward()

    return median_ms(fwd, warmup, reps), median_ms(fb, warmup, reps)


def check(hf, grouped, x, tol=1e-5):
    """hf and grouped hold the same weights: outputs and input gradients must agree."""
    grads = []
    for m in (hf, grouped):
        xi = x.detach().clone().requires_grad_(True)
        out = m(xi)
        out.sum().backward()
        grads.append((out.detach(), xi.grad))
    for name, a, b in zip(("output", "input gradient"), grads[0], grads[1]):
        diff = (a - b).abs().max().item()
        assert diff <= tol, f"hf and grouped MoE {name}s differ by {diff:.3g} (> {tol:g})"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--d-ff", type=int, default=1024)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--capacity-factor", type=float, default=1.25)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON line")
    a = p.parse_args()

    try:  # must come before any parallel work
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    t, d, f, e, k = a.tokens, a.d_model, a.d_ff, a.experts, a.top_k

    x = torch.randn(t, d).requires_grad_(True)
    dense = ffn(d, f)
    grouped = MoE(d, f, e, k, a.capacity_factor, grouped=True)
    hf = MoE(d, f, e, k, a.capacity_factor, grouped=False)
    with torch.no_grad():  # same weights for both MoEs
        hf.router.weight.copy_(grouped.router.weight)
        for i, net in enumerate(hf.experts):
            net[0].weight.copy_(grouped.w1[i].t())
            net[2].weight.copy_(grouped.w2[i].t())
    check(hf, grouped, x)

    res = {"torch": torch.__version__, "threads": torch.get_num_threads(), "tokens": t,
           "d_model": d, "d_ff": f, "experts": e, "top_k": k}
    for name, model in (("dense", dense), ("hf", hf), ("grouped", grouped)):
        fwd, fb = bench(model, x, a.warmup, a.reps)
        res[f"{name}_fwd_ms"], res[f"{name}_fb_ms"] = round(fwd, 3), round(fb, 3)

    if a.json:
        print(json.dumps(res))
        return
    c = math.ceil(a.capacity_factor * t * k / e)
    print(f"torch {res['torch']}, {res['threads']} thread(s), float32 CPU, median of {a.reps} "
          f"after {a.warmup} warm-up")
    print(f"T={t} d={d} f={f} E={e} k={k} cf={a.capacity_factor} C={c}")
    print(f"{'layer':<8} {'fwd ms':>10} {'fwd+bwd ms':>11} {'fwd/dense':>10} {'fb/dense':>9}")
    for name in ("dense", "hf", "grouped"):
        fwd, fb = res[f"{name}_fwd_ms"], res[f"{name}_fb_ms"]
        print(f"{name:<8} {fwd:>10.3f} {fb:>11.3f} {fwd / res['dense_fwd_ms']:>10.2f} "
              f"{fb / res['dense_fb_ms']:>9.2f}")


if __name__ == "__main__":
    main()
