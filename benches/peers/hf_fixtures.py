"""Writes the Hugging Face parity fixtures of tests/hf.rs (committed under tests/fixtures/hf/).

Random-weight sparse blocks built by `transformers` 4.57.1 itself, saved under the tensor names a
full checkpoint uses, plus an input batch and the block's outputs in eval mode:

    NAME.safetensors     the block's weights, e.g. model.layers.0.block_sparse_moe.experts.3.w1.weight
    NAME_io.safetensors  input [2, 5, 16], output [2, 5, 16], router_logits [10, E]

    PY="$(benches/peers/setup.sh | tail -n 1)"      # torch 2.9.0, transformers 4.57.1
    "$PY" benches/peers/hf_fixtures.py tests/fixtures/hf

--check DIR instead loads every NAME.safetensors found in DIR (e.g. the files examples/hf_interop
exported) into a fresh HF block with strict=True and compares its output with the committed
NAME_io.safetensors: the export → HF load direction of the parity.
"""

import argparse
import pathlib
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers.models.mixtral.configuration_mixtral import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
from transformers.models.qwen2_moe.configuration_qwen2_moe import Qwen2MoeConfig
from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock
from transformers.models.switch_transformers.configuration_switch_transformers import (
    SwitchTransformersConfig,
)
from transformers.models.switch_transformers.modeling_switch_transformers import (
    SwitchTransformersSparseMLP,
)

D, F, E = 16, 32, 4
BATCH, SEQ = 2, 5


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


BLOCKS = {"switch": switch, "mixtral": mixtral, "qwen2_moe": qwen2_moe}


def run(name, block, x):
    """(output [B, S, d], router logits [B·S, E]) of a block in eval mode."""
    block.eval()
    with torch.no_grad():
        out = block(x)
    if name == "switch":
        y, (logits, _) = out
        logits = logits.reshape(-1, E)
    else:
        y, logits = out
    return y, logits


def write(directory):
    directory.mkdir(parents=True, exist_ok=True)
    for seed, (name, make) in enumerate(BLOCKS.items()):
        torch.manual_seed(seed)
        block, prefix = make()
        # Router weights large enough that the top-k choices are not near ties.
        for pname, p in block.named_parameters():
            if pname.endswith("gate.weight") or "router" in pname:
                p.data.normal_(0.0, 0.5)
        x = torch.randn(BATCH, SEQ, D)
        y, logits = run(name, block, x)
        weights = {f"{prefix}.{k}": v.contiguous() for k, v in block.state_dict().items()}
        save_file(weights, directory / f"{name}.safetensors", metadata={"format": "pt"})
        io = {"input": x, "output": y.contiguous(), "router_logits": logits.contiguous()}
        save_file(io, directory / f"{name}_io.safetensors", metadata={"format": "pt"})
        print(f"{name}: {len(weights)} tensors under {prefix}, |y|max {y.abs().max():.3f}")


def check(directory, fixtures):
    worst = 0.0
    for name, make in BLOCKS.items():
        path = directory / f"{name}.safetensors"
        if not path.exists():
            continue
        block, prefix = make()
        state = {k[len(prefix) + 1 :]: v for k, v in load_file(path).items()}
        block.load_state_dict(state, strict=True)
        io = load_file(fixtures / f"{name}_io.safetensors")
        y, logits = run(name, block, io["input"])
        dy = (y - io["output"]).abs().max().item()
        dl = (logits - io["router_logits"]).abs().max().item()
        worst = max(worst, dy, dl)
        print(f"{name}: HF loads {path} (strict); max |Δ output| {dy:.2e}, |Δ router logits| {dl:.2e}")
    if worst > 1e-5:
        sys.exit(f"max difference {worst:.2e} > 1e-5")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=pathlib.Path)
    parser.add_argument("--check", type=pathlib.Path, metavar="EXPORTED",
                        help="check the exported files in EXPORTED against the fixtures in dir")
    args = parser.parse_args()
    if args.check:
        check(args.check, args.dir)
    else:
        write(args.dir)
