#!/usr/bin/env python3
"""Write the PyTorch reference fixtures that gradflow's parity tests compare against.

    pip install -r tools/parity/requirements.txt && python tools/parity/make_fixtures.py

Everything lands in tests/fixtures/parity/ (a few hundred KB, committed, so that
`cargo test` needs no PyTorch):

  ops_f64.safetensors, ops_f32.safetensors
      One case per op and shape: inputs `<case>/x<i>`, integer indices `<case>/idx`,
      fixed random weights `<case>/w`, PyTorch's output `<case>/out` and the gradient
      of sum(out * w) with respect to each input, `<case>/g<i>`. The safetensors
      metadata key `cases` lists the cases (op name and arguments) as JSON.
  ops_ties_f64.safetensors      the same for max and min with tied extrema over several axes
                                (`make_fixtures.py --only ops_ties` writes this file alone)
  <model>.toml                  the model in gradflow's model TOML
  <model>.weights.safetensors   PyTorch's state_dict (safetensors.torch.save_file)
  <model>.batch.safetensors     `input` and `target` (int64 class indices)
  <model>.expected.safetensors  `out`, `loss` (data loss + L1/L2 penalty), `data_loss`,
                                `grad/<param>` and `grad/input`, and `state/<buffer>`:
                                every buffer after the forward pass (BatchNorm running stats)
  optim.safetensors             parameters after each of 5 optimizer steps with fixed gradients
  schedules.json                the lr after each scheduler step
  manifest.json                 the model list with dtype, mode, loss settings, and versions

If tests/fixtures/parity/from_gradflow_mlp.safetensors exists (written by gradflow:
`cargo test -p gradflow-nn --test parity -- --ignored write_from_gradflow_fixture`),
it is loaded into the same nn.Sequential with strict=True and the eval outputs are
compared with gradflow's (from_gradflow_mlp.check.safetensors).
"""

import copy
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "parity"
F64, F32 = torch.float64, torch.float32
DT_NAME = {F64: "f64", F32: "f32"}

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- op cases
# Inputs are drawn in f64 from a per-case seed; the f32 fixtures use the same
# values rounded to f32, and PyTorch computes in that dtype.


class Cases:
    def __init__(self):
        self.items = []

    def add(self, name, op, inputs, args=None, idx=None):
        assert all(c["name"] != name for c, _, _ in self.items), name
        self.items.append(({"name": name, "op": op, "args": args or {}}, inputs, idx))


def build_cases():
    cs = Cases()
    seed = [100]

    def g():
        seed[0] += 1
        return gen(seed[0])

    def randn(*shape, scale=1.0):
        return torch.randn(tuple(shape), generator=g(), dtype=F64) * scale

    def pos(*shape):  # strictly positive: log, sqrt, fractional powers
        return torch.rand(tuple(shape), generator=g(), dtype=F64) * 1.5 + 0.2

    def away(*shape):  # bounded away from zero: divisors
        gg = g()
        mag = torch.rand(tuple(shape), generator=gg, dtype=F64) + 0.5
        sign = torch.randint(0, 2, tuple(shape), generator=gg).to(F64) * 2 - 1
        return mag * sign

    # Binary ops, with broadcasting.
    shapes = [([3, 4], [3, 4]), ([2, 3, 4], [4]), ([2, 1, 4], [3, 1]), ([4, 1], [1, 5]), ([3], [2, 3]), ([], [2, 3])]
    for op in ["add", "sub", "mul", "div", "maximum", "minimum"]:
        for i, (sa, sb) in enumerate(shapes):
            b = away(*sb) if op == "div" else randn(*sb)
            cs.add(f"{op}_{i}", op, [randn(*sa), b])
    # Exact ties: PyTorch splits the gradient evenly between the two inputs.
    ta = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 2.0]], dtype=F64)
    tb = torch.tensor([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]], dtype=F64)
    cs.add("maximum_ties", "maximum", [ta, tb])
    cs.add("minimum_ties", "minimum", [ta, tb])

    # Elementwise maps.
    cs.add("neg", "neg", [randn(3, 5)])
    cs.add("exp", "exp", [randn(2, 3, 4)])
    cs.add("log", "log", [pos(3, 5)])
    cs.add("sqrt", "sqrt", [pos(3, 5)])
    cs.add("abs", "abs", [randn(3, 5)])
    for i, p in enumerate([2.0, 3.0, 0.5, -1.5, 0.0]):
        cs.add(f"powf_{i}", "powf", [pos(3, 4)], {"p": p})
    for i, p in enumerate([2.0, 3.0]):
        cs.add(f"powf_neg_base_{i}", "powf", [randn(3, 4)], {"p": p})
    cs.add("clamp", "clamp", [randn(3, 5)], {"min": -0.5, "max": 0.7})

    # Activations: moderate inputs, wide inputs (saturation, softplus threshold).
    acts = [
        ("relu", {}),
        ("leaky_relu", {"negative_slope": 0.01}),
        ("leaky_relu", {"negative_slope": 0.2}),
        ("elu", {"alpha": 1.0}),
        ("elu", {"alpha": 0.5}),
        ("selu", {}),
        ("gelu", {}),
        ("gelu_tanh", {}),
        ("silu", {}),
        ("sigmoid", {}),
        ("tanh", {}),
        ("softplus", {"beta": 1.0, "threshold": 20.0}),
        ("softplus", {"beta": 2.0, "threshold": 5.0}),
        ("softsign", {}),
        ("hardtanh", {"min": -1.0, "max": 1.0}),
        ("hardtanh", {"min": -0.5, "max": 2.0}),
    ]
    for i, (op, args) in enumerate(acts):
        cs.add(f"{op}_{i}", op, [randn(4, 5, scale=2.0)], args)
        cs.add(f"{op}_{i}_wide", op, [randn(2, 3, 4, scale=15.0)], args)
    # Exactly at the kinks (0, clamp/hardtanh bounds): PyTorch's subgradient choices.
    kinks = torch.tensor([[-2.0, -1.0, -0.7, -0.5], [0.0, 0.5, 0.7, 1.0], [2.0, 0.3, -0.3, 0.0]], dtype=F64)
    for op, args in [
        ("relu", {}),
        ("leaky_relu", {"negative_slope": 0.1}),
        ("elu", {"alpha": 0.5}),
        ("selu", {}),
        ("abs", {}),
        ("clamp", {"min": -0.5, "max": 0.7}),
        ("hardtanh", {"min": -0.5, "max": 0.7}),
        ("hardtanh", {"min": -1.0, "max": 1.0}),
    ]:
        cs.add(f"kink_{op}_{len(cs.items)}", op, [kinks.clone()], args)

    # Matrix products.
    cs.add("matmul_2d", "matmul", [randn(3, 4), randn(4, 5)])
    cs.add("matmul_batched", "matmul", [randn(2, 3, 4), randn(2, 4, 5)])
    cs.add("matmul_bcast_rhs", "matmul", [randn(2, 3, 4), randn(4, 5)])
    cs.add("matmul_bcast_lhs", "matmul", [randn(5, 3), randn(2, 3, 2)])
    cs.add("matmul_bcast_both", "matmul", [randn(2, 1, 3, 4), randn(3, 4, 2)])
    cs.add("linear", "linear", [randn(4, 6), randn(3, 6), randn(3)])
    cs.add("linear_nobias", "linear", [randn(4, 6), randn(3, 6)])

    # Reductions.
    red = [([1], False), ([0, 2], True), ([], False), ([-1], False), ([0], True)]
    for op in ["sum", "mean", "max", "min"]:
        for i, (axes, keep) in enumerate(red):
            cs.add(f"{op}_{i}", op, [randn(2, 3, 4)], {"axes": axes, "keepdim": keep})
    # Ties along one axis: torch.max(x, dim) gives the whole gradient to the index it
    # returns (the first), as gradflow does. (Ties over several axes: tie_cases.)
    ties = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, -1.0], [0.0, 5.0, 1.0, 5.0]], dtype=F64)
    cs.add("max_dim_ties", "max_dim", [ties.clone()], {"axis": 1, "keepdim": False})
    cs.add("min_dim_ties", "min_dim", [ties.clone()], {"axis": 0, "keepdim": True})
    cs.add("max_dim", "max_dim", [randn(2, 3, 4)], {"axis": -1, "keepdim": False})
    for i, (axes, keep, corr) in enumerate(
        [([1], False, 1), ([0, 2], True, 0), ([], False, 1), ([-1], False, 0), ([0], True, 1)]
    ):
        cs.add(f"var_{i}", "var", [randn(2, 3, 4)], {"axes": axes, "keepdim": keep, "correction": corr})

    # Shape ops.
    cs.add("reshape_0", "reshape", [randn(2, 3, 4)], {"shape": [6, 4]})
    cs.add("reshape_1", "reshape", [randn(2, 3, 4)], {"shape": [4, 3, 2]})
    cs.add("transpose_0", "transpose", [randn(2, 3, 4)], {"a": 0, "b": 2})
    cs.add("transpose_1", "transpose", [randn(2, 3, 4)], {"a": 1, "b": -1})
    cs.add("transpose_then_matmul", "transpose_matmul", [randn(4, 3), randn(4, 5)])
    cs.add("narrow_0", "narrow", [randn(3, 5)], {"axis": 1, "start": 1, "len": 3})
    cs.add("narrow_1", "narrow", [randn(2, 4, 3)], {"axis": 0, "start": 1, "len": 1})
    cs.add("narrow_2", "narrow", [randn(2, 4, 3)], {"axis": -1, "start": 2, "len": 1})
    cs.add("cat_0", "cat", [randn(2, 3), randn(2, 2)], {"axis": 1})
    cs.add("cat_1", "cat", [randn(1, 3), randn(2, 3), randn(3, 3)], {"axis": 0})
    cs.add("cat_2", "cat", [randn(2, 3, 2), randn(2, 3, 1)], {"axis": -1})
    for i, axis in enumerate([0, 1, 2, -1]):
        cs.add(f"stack_{i}", "stack", [randn(2, 3), randn(2, 3), randn(2, 3)], {"axis": axis})
    cs.add("index_select_0", "index_select", [randn(4, 3)], {"axis": 0}, torch.tensor([2, 0, 2, 3]))
    cs.add("index_select_1", "index_select", [randn(3, 5)], {"axis": 1}, torch.tensor([4, 4, 1]))
    cs.add("index_select_2", "index_select", [randn(2, 3, 4)], {"axis": -1}, torch.tensor([3, 0]))
    cs.add("gather_0", "gather", [randn(3, 4)], {"axis": 1}, torch.randint(0, 4, (3, 2), generator=g()))
    cs.add("gather_1", "gather", [randn(3, 4)], {"axis": 0}, torch.randint(0, 3, (2, 4), generator=g()))
    cs.add("gather_2", "gather", [randn(2, 3, 4)], {"axis": 2}, torch.randint(0, 4, (2, 3, 5), generator=g()))
    cs.add("gather_3", "gather", [randn(2, 3, 4)], {"axis": 1}, torch.randint(0, 3, (1, 2, 3), generator=g()))

    # Softmax.
    for i, (shape, axis, scale) in enumerate(
        [([3, 5], 1, 1.0), ([3, 5], 0, 1.0), ([2, 3, 4], -1, 1.0), ([2, 3, 4], 1, 1.0), ([3, 5], 1, 40.0)]
    ):
        x = randn(*shape, scale=scale)
        cs.add(f"softmax_{i}", "softmax", [x.clone()], {"axis": axis})
        cs.add(f"log_softmax_{i}", "log_softmax", [x.clone()], {"axis": axis})

    # Convolutions.
    def conv(name, x, cout, k, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, bias=True):
        cin = x[1]
        ins = [randn(*x), randn(cout, cin // groups, *k, scale=0.5)]
        if bias:
            ins.append(randn(cout))
        args = {"stride": list(stride), "padding": list(padding), "dilation": list(dilation), "groups": groups}
        cs.add(name, "conv2d", ins, args)

    conv("conv2d_basic", [2, 3, 7, 7], 4, (3, 3))
    conv("conv2d_stride_pad", [2, 3, 7, 7], 4, (3, 3), stride=(2, 2), padding=(1, 1))
    conv("conv2d_dilation", [1, 2, 9, 9], 3, (3, 3), padding=(2, 2), dilation=(2, 2))
    conv("conv2d_groups", [2, 4, 6, 6], 6, (3, 3), groups=2)
    conv("conv2d_depthwise", [1, 4, 5, 5], 4, (3, 3), padding=(1, 1), groups=4)
    conv("conv2d_rect", [2, 3, 6, 7], 3, (2, 3), stride=(2, 1), padding=(1, 0))
    conv("conv2d_nobias", [2, 2, 5, 5], 3, (3, 3), stride=(1, 2), bias=False)
    conv("conv2d_all", [2, 4, 8, 9], 2, (3, 2), stride=(2, 3), padding=(2, 1), dilation=(2, 1), groups=2)

    # Pooling (PyTorch defaults otherwise: floor mode, count_include_pad=True).
    pools = [
        ([2, 3, 6, 6], (2, 2), (2, 2), (0, 0)),
        ([2, 2, 7, 7], (3, 3), (2, 2), (1, 1)),
        ([1, 2, 5, 6], (2, 3), (1, 2), (1, 1)),
        ([1, 1, 5, 5], (3, 3), (1, 1), (0, 0)),
        ([2, 1, 7, 8], (3, 2), (2, 3), (1, 0)),
    ]
    for i, (shape, k, s, p) in enumerate(pools):
        x = randn(*shape)
        args = {"kernel": list(k), "stride": list(s), "padding": list(p)}
        cs.add(f"max_pool2d_{i}", "max_pool2d", [x.clone()], args)
        cs.add(f"avg_pool2d_{i}", "avg_pool2d", [x.clone()], args)

    # Cross-entropy (mean over the batch), with label smoothing.
    for i, (ls, scale) in enumerate([(0.0, 2.0), (0.1, 2.0), (0.3, 2.0), (0.1, 50.0), (1.0, 1.0)]):
        cs.add(
            f"cross_entropy_{i}",
            "cross_entropy",
            [randn(6, 5, scale=scale)],
            {"label_smoothing": ls},
            torch.randint(0, 5, (6,), generator=g()),
        )
    return cs


def torch_op(op, xs, a, idx):
    pair = lambda v: tuple(v)  # noqa: E731
    if op in ("add", "sub", "mul", "div", "maximum", "minimum"):
        return getattr(torch, op)(xs[0], xs[1])
    if op in ("neg", "exp", "log", "sqrt", "abs", "sigmoid", "tanh"):
        return getattr(torch, op)(xs[0])
    if op == "powf":
        return torch.pow(xs[0], a["p"])
    if op == "clamp":
        return torch.clamp(xs[0], a["min"], a["max"])
    if op == "relu":
        return F.relu(xs[0])
    if op == "leaky_relu":
        return F.leaky_relu(xs[0], a["negative_slope"])
    if op == "elu":
        return F.elu(xs[0], a["alpha"])
    if op == "selu":
        return F.selu(xs[0])
    if op == "gelu":
        return F.gelu(xs[0])
    if op == "gelu_tanh":
        return F.gelu(xs[0], approximate="tanh")
    if op == "silu":
        return F.silu(xs[0])
    if op == "softplus":
        return F.softplus(xs[0], beta=a["beta"], threshold=a["threshold"])
    if op == "softsign":
        return F.softsign(xs[0])
    if op == "hardtanh":
        return F.hardtanh(xs[0], a["min"], a["max"])
    if op == "matmul":
        return torch.matmul(xs[0], xs[1])
    if op == "linear":
        return F.linear(xs[0], xs[1], xs[2] if len(xs) > 2 else None)
    if op in ("sum", "mean", "max", "min", "var"):
        dims = a["axes"] if a["axes"] else None
        kw = {"dim": dims, "keepdim": a["keepdim"]} if dims else {}
        if op == "sum":
            return xs[0].sum(**kw)
        if op == "mean":
            return xs[0].mean(**kw)
        if op == "var":
            return torch.var(xs[0], correction=a["correction"], **kw)
        return (torch.amax if op == "max" else torch.amin)(xs[0], **kw)
    if op in ("max_dim", "min_dim"):
        fn = torch.max if op == "max_dim" else torch.min
        return fn(xs[0], dim=a["axis"], keepdim=a["keepdim"]).values
    if op == "reshape":
        return xs[0].reshape(a["shape"])
    if op == "transpose":
        return xs[0].transpose(a["a"], a["b"])
    if op == "transpose_matmul":
        return xs[0].t() @ xs[1]
    if op == "narrow":
        return xs[0].narrow(a["axis"], a["start"], a["len"])
    if op == "cat":
        return torch.cat(xs, a["axis"])
    if op == "stack":
        return torch.stack(xs, a["axis"])
    if op == "index_select":
        return xs[0].index_select(a["axis"], idx)
    if op == "gather":
        return torch.gather(xs[0], a["axis"], idx)
    if op == "softmax":
        return F.softmax(xs[0], a["axis"])
    if op == "log_softmax":
        return F.log_softmax(xs[0], a["axis"])
    if op == "conv2d":
        return F.conv2d(
            xs[0],
            xs[1],
            xs[2] if len(xs) > 2 else None,
            pair(a["stride"]),
            pair(a["padding"]),
            pair(a["dilation"]),
            a["groups"],
        )
    if op == "max_pool2d":
        return F.max_pool2d(xs[0], pair(a["kernel"]), pair(a["stride"]), pair(a["padding"]))
    if op == "avg_pool2d":
        return F.avg_pool2d(xs[0], pair(a["kernel"]), pair(a["stride"]), pair(a["padding"]))
    if op == "cross_entropy":
        return F.cross_entropy(xs[0], idx, label_smoothing=a["label_smoothing"])
    raise ValueError(op)


def tie_cases():
    """Tied extrema over several axes, or all of them: torch.amax (and torch.max(x)) split
    the gradient evenly among the ties, as gradflow's max and min do."""
    cs = Cases()
    ties = torch.tensor(
        [[[1.0, 3.0, 3.0], [0.0, 3.0, -1.0]], [[2.0, 2.0, 0.0], [2.0, -4.0, -4.0]]], dtype=F64
    )
    for op in ["max", "min"]:
        for i, (axes, keep) in enumerate([([], False), ([0, 2], True), ([1, 2], False), ([0, 1], False)]):
            cs.add(f"{op}_ties_{i}", op, [ties.clone()], {"axes": axes, "keepdim": keep})
    cs.add("max_ties_all_equal", "max", [torch.full((2, 3), 0.5, dtype=F64)], {"axes": [], "keepdim": False})
    cs.add("min_ties_all_equal", "min", [torch.full((3, 2), -1.5, dtype=F64)], {"axes": [0, 1], "keepdim": True})
    return cs


def write_ops(dtype, cases=None, stem="ops"):
    cases = cases or build_cases()
    tensors, meta = {}, []
    for n, (case, inputs, idx) in enumerate(cases.items):
        name = case["name"]
        xs = [x.to(dtype).clone().requires_grad_(True) for x in inputs]
        out = torch_op(case["op"], xs, case["args"], idx)
        w = torch.randn(out.shape, generator=gen(10_000 + n), dtype=F64).to(dtype)
        (out * w).sum().backward()
        for i, x in enumerate(xs):
            tensors[f"{name}/x{i}"] = x.detach().clone()
            tensors[f"{name}/g{i}"] = x.grad.detach().clone()
        if idx is not None:
            tensors[f"{name}/idx"] = idx.to(torch.int64).contiguous()
        tensors[f"{name}/w"] = w.contiguous()
        tensors[f"{name}/out"] = out.detach().contiguous().clone()
        meta.append({**case, "inputs": len(xs), "has_idx": idx is not None})
    path = OUT / f"{stem}_{DT_NAME[dtype]}.safetensors"
    # One metadata key only: safetensors writes a map's keys in no fixed order.
    save_file(tensors, str(path), metadata={"cases": json.dumps(meta)})
    return len(meta)


# ---------------------------------------------------------------- models


def toml_of(input_shape, seq):
    """The model as gradflow model TOML: PyTorch class names and constructor arguments."""
    lines = [f"input = {list(input_shape)}"]

    def pair(v):
        v = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
        return str(v[0]) if v[0] == v[1] else f"[{v[0]}, {v[1]}]"

    def stack(path, seq):
        for m in seq:
            layer(path, m)

    def layer(path, m):
        nonlocal lines
        t = type(m).__name__
        lines.extend(["", f"[[{path}]]", f'type = "{t}"'])
        if isinstance(m, Residual):
            stack(f"{path}.body", m.body)
            stack(f"{path}.shortcut", m.shortcut or [])
        elif isinstance(m, nn.Linear):
            lines.append(f"out_features = {m.out_features}")
            if m.bias is None:
                lines.append("bias = false")
        elif isinstance(m, nn.Conv2d):
            lines += [
                f"out_channels = {m.out_channels}",
                f"kernel_size = {pair(m.kernel_size)}",
                f"stride = {pair(m.stride)}",
                f"padding = {pair(m.padding)}",
                f"dilation = {pair(m.dilation)}",
                f"groups = {m.groups}",
            ]
            if m.bias is None:
                lines.append("bias = false")
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            lines += [f"kernel_size = {pair(m.kernel_size)}", f"stride = {pair(m.stride)}", f"padding = {pair(m.padding)}"]
            if isinstance(m, nn.MaxPool2d):
                assert m.dilation == 1 and not m.ceil_mode
            else:
                assert m.count_include_pad and not m.ceil_mode
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            lines += [f"eps = {m.eps!r}", f"momentum = {m.momentum!r}"]
        elif isinstance(m, nn.LayerNorm):
            if len(m.normalized_shape) > 1:
                lines.append(f"normalized_shape = {list(m.normalized_shape)}")
            lines += [f"eps = {m.eps!r}", f"elementwise_affine = {str(m.elementwise_affine).lower()}"]
        elif isinstance(m, nn.LeakyReLU):
            lines.append(f"negative_slope = {m.negative_slope!r}")
        elif isinstance(m, nn.ELU):
            lines.append(f"alpha = {float(m.alpha)!r}")
        elif isinstance(m, nn.GELU):
            lines.append(f'approximate = "{m.approximate}"')
        elif isinstance(m, nn.Softplus):
            lines += [f"beta = {float(m.beta)!r}", f"threshold = {float(m.threshold)!r}"]
        elif isinstance(m, nn.Hardtanh):
            lines += [f"min_val = {float(m.min_val)!r}", f"max_val = {float(m.max_val)!r}"]
        elif isinstance(m, nn.RNNBase):
            assert m.batch_first and m.proj_size == 0
            if isinstance(m, nn.RNN) and m.nonlinearity != "tanh":
                lines.append(f'nonlinearity = "{m.nonlinearity}"')
            lines += [f"hidden_size = {m.hidden_size}", f"num_layers = {m.num_layers}"]
            lines += [f"bias = {str(m.bias).lower()}", f"bidirectional = {str(m.bidirectional).lower()}"]
            lines += [f"dropout = {float(m.dropout)!r}", f'output = "{m.output_kind}"']
        elif isinstance(m, nn.Embedding):
            lines += [f"num_embeddings = {m.num_embeddings}", f"embedding_dim = {m.embedding_dim}"]
            if m.padding_idx is not None:
                lines.append(f"padding_idx = {m.padding_idx}")
        elif isinstance(m, SequencePool):
            lines.append(f'mode = "{m.mode}"')
        elif isinstance(m, MultiheadAttention):
            lines += [f"num_heads = {m.num_heads}", f"dropout = {float(m.dropout)!r}"]
            lines += [f"bias = {str(m.in_proj_bias is not None).lower()}", f"causal = {str(m.causal).lower()}"]
        elif isinstance(m, nn.TransformerEncoderLayer):
            act = {F.relu: "relu", F.gelu: "gelu"}[m.activation]
            lines += [f"nhead = {m.self_attn.num_heads}", f"dim_feedforward = {m.linear1.out_features}"]
            lines += [f"dropout = {float(m.dropout.p)!r}", f'activation = "{act}"', f"layer_norm_eps = {m.norm1.eps!r}"]
            lines.append(f"norm_first = {str(m.norm_first).lower()}")
        elif isinstance(m, (nn.ReLU, nn.SELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Softsign, nn.Flatten, PositionEmbedding)):
            pass
        else:
            raise TypeError(t)

    stack("layer", seq)
    return "\n".join(lines) + "\n"


class Residual(nn.Module):
    """gradflow's Residual: x + body(x), or shortcut(x) + body(x)."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = nn.Sequential(*body)
        self.shortcut = nn.Sequential(*shortcut) if shortcut else None

    def forward(self, x):
        return (x if self.shortcut is None else self.shortcut(x)) + self.body(x)


class SequencePool(nn.Module):
    """gradflow's SequencePool: [N, T, E] -> [N, E] by the mean, first or last step."""

    def __init__(self, mode="mean"):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        return {"mean": lambda: x.mean(dim=1), "first": lambda: x[:, 0], "last": lambda: x[:, -1]}[self.mode]()


class PositionEmbedding(nn.Module):
    """gradflow's PositionEmbedding: a learned [T, E] added to each sample."""

    def __init__(self, steps, dim):
        super().__init__()
        self.weight = nn.Parameter(0.02 * torch.randn(steps, dim))

    def forward(self, x):
        return x + self.weight


class MultiheadAttention(nn.MultiheadAttention):
    """gradflow's MultiheadAttention: self-attention on one batch-first input,
    optionally causal, handing on the output alone (so it fits in nn.Sequential)."""

    def __init__(self, embed_dim, num_heads, causal=False, **kw):
        super().__init__(embed_dim, num_heads, batch_first=True, **kw)
        self.causal = causal

    def forward(self, x):
        t = x.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(t, dtype=x.dtype) if self.causal else None
        return super().forward(x, x, x, need_weights=False, attn_mask=mask, is_causal=self.causal)[0]


def mha(heads, causal=False, bias=True):
    # Linear into an 8-wide embedding of [4, 6] sequences, attention, then a classifier.
    return lambda: nn.Sequential(
        nn.Linear(6, 8), MultiheadAttention(8, heads, causal=causal, bias=bias), nn.Flatten(), nn.Linear(32, 5)
    )


def encoder(activation, norm_first, layers=1):
    def build():
        def block():
            return nn.TransformerEncoderLayer(
                8, 2, dim_feedforward=12, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
            )

        return nn.Sequential(nn.Linear(6, 8), *[block() for _ in range(layers)], nn.Flatten(), nn.Linear(32, 5))

    return build


def attention_list():
    """MultiheadAttention with 1-2 heads, causal or not, with and without biases; encoder
    layers post- and pre-norm with ReLU and GELU, one of them two blocks deep. Dropout 0."""
    common = dict(input=[4, 6], n=3)
    return [
        dict(name="mha_f64", build=mha(2), dtype=F64, seed=280, **common),
        dict(name="mha_causal_f64", build=mha(1, causal=True), dtype=F64, seed=281, **common),
        dict(name="mha_causal_nobias_f64", build=mha(2, causal=True, bias=False), dtype=F64, seed=282, **common),
        dict(name="mha_f32", build=mha(1), dtype=F32, seed=283, **common),
        dict(name="mha_causal_f32", build=mha(2, causal=True), dtype=F32, seed=284, **common),
        dict(name="tel_relu_f64", build=encoder("relu", False), dtype=F64, seed=285, **common),
        dict(name="tel_gelu_norm_first_f64", build=encoder("gelu", True), dtype=F64, seed=286, **common),
        dict(name="tel2_gelu_f64", build=encoder("gelu", False, layers=2), dtype=F64, seed=287, **common),
        dict(name="tel_relu_norm_first_f32", build=encoder("relu", True), dtype=F32, seed=288, **common),
        dict(name="tel_gelu_f32", build=encoder("gelu", False), dtype=F32, seed=289, **common),
    ]


ACTS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "elu": lambda: nn.ELU(0.7),
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softplus": lambda: nn.Softplus(beta=1.5, threshold=4.0),
    "softsign": nn.Softsign,
    "hardtanh": lambda: nn.Hardtanh(-0.8, 0.9),
}


def mlp(act):
    return lambda: nn.Sequential(nn.Linear(12, 16), act(), nn.Linear(16, 16), act(), nn.Linear(16, 5))


def lenet():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    )


def cnn_misc():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.Tanh(),
        nn.Conv2d(4, 4, (3, 2), padding=(2, 1), dilation=(2, 1), groups=2, bias=False),
        nn.SiLU(),
        nn.AvgPool2d(2, stride=1, padding=1),
        nn.MaxPool2d((2, 3), stride=(2, 1), padding=(1, 1)),
        nn.Flatten(),
        nn.Linear(4 * 4 * 7, 5),
    )


def bn1d():
    return nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 5))


def bn1d_seq():
    # BatchNorm1d over [N, C, L].
    return nn.Sequential(nn.BatchNorm1d(4, eps=1e-3, momentum=0.2), nn.Flatten(), nn.Linear(24, 3))


def bn2d():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
    )


def bn_illcond():
    # Two train-mode BatchNorms (2d, then 1d) fed a batch of 2 with a large mean
    # and a small spread: f32 sums lose most of their digits here.
    return nn.Sequential(
        nn.BatchNorm2d(3),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, 3),
    )


def ln_seq():
    # Linear and LayerNorm over the last dimension of [N, T, F].
    return nn.Sequential(
        nn.Linear(6, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 8), nn.LayerNorm(8, eps=1e-3), nn.Flatten(), nn.Linear(32, 5)
    )


def ln_flat():
    # LayerNorm over [N, F], without affine parameters.
    return nn.Sequential(
        nn.Linear(12, 16),
        nn.LayerNorm(16, elementwise_affine=False),
        nn.Tanh(),
        nn.Linear(16, 5),
    )


def ln_2d():
    # normalized_shape over the two trailing dimensions of a [T, F] sample.
    return nn.Sequential(nn.LayerNorm([4, 6]), nn.Linear(6, 3), nn.GELU(), nn.Flatten(), nn.Linear(12, 5))


def res_mlp():
    # An identity and a projection shortcut, with LayerNorm in the body.
    return nn.Sequential(
        nn.Linear(12, 16),
        Residual([nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16)]),
        nn.ReLU(),
        Residual([nn.LayerNorm(16), nn.Linear(16, 8), nn.Tanh()], shortcut=[nn.Linear(16, 8, bias=False)]),
        nn.Linear(8, 5),
    )


def res_cnn():
    # A 1x1 Conv2d shortcut, BatchNorm in the body, a nested block.
    return nn.Sequential(
        Residual(
            [nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), Residual([nn.Conv2d(4, 4, 3, padding=1), nn.Tanh()])],
            shortcut=[nn.Conv2d(3, 4, 1)],
        ),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 5),
    )


def emb_pos_mean():
    # Token ids (a padding id among them) through a learned table, positions, the mean over steps.
    return nn.Sequential(nn.Embedding(10, 6, padding_idx=0), PositionEmbedding(5, 6), SequencePool("mean"), nn.Linear(6, 4))


def emb_ln_first():
    return nn.Sequential(nn.Embedding(7, 6), nn.LayerNorm(6), nn.Tanh(), SequencePool("first"), nn.Linear(6, 4))


def pos_last():
    # Features per step: the input gradient flows through PositionEmbedding and SequencePool.
    return nn.Sequential(nn.Linear(3, 6), PositionEmbedding(4, 6), nn.ReLU(), SequencePool("last"), nn.Linear(6, 3))


def recurrent(cls, output, **kw):
    """`cls` (nn.RNN, nn.LSTM, nn.GRU) with batch_first=True, handing on either the
    whole output sequence or the top layer's h_n of each direction (gradflow's
    `output = "last"`), so that it can sit in an nn.Sequential under PyTorch's names."""

    class Recurrent(cls):
        def forward(self, x):
            y, h = super().forward(x)
            if output == "sequence":
                return y
            h = h[0] if isinstance(h, tuple) else h
            dirs = 2 if self.bidirectional else 1
            return torch.cat([h[h.shape[0] - dirs + i] for i in range(dirs)], dim=1)

    Recurrent.__name__ = cls.__name__
    m = Recurrent(batch_first=True, **kw)
    m.output_kind = output
    return m


def rec_model(cls, output, **kw):
    def build():
        r = recurrent(cls, output, input_size=3, hidden_size=5, **kw)
        width = 5 * (2 if kw.get("bidirectional") else 1)
        if output == "sequence":
            return nn.Sequential(r, nn.Flatten(), nn.Linear(4 * width, 3))
        return nn.Sequential(r, nn.Linear(width, 3))

    return build


def recurrent_list():
    """For each cell: one layer forward with bias (f64), two bidirectional layers without
    bias (f64), two bidirectional layers with bias (f32); both outputs among them."""
    ms = []
    cells = [("rnn", nn.RNN, {}), ("rnn_relu", nn.RNN, dict(nonlinearity="relu")), ("lstm", nn.LSTM, {}), ("gru", nn.GRU, {})]
    for i, (name, cls, extra) in enumerate(cells):
        two = dict(num_layers=2, bidirectional=True, **extra)
        common = dict(input=[4, 3], n=3)
        ms += [
            dict(name=f"{name}_f64", build=rec_model(cls, "last", **extra), dtype=F64, seed=260 + 4 * i, **common),
            dict(name=f"{name}_bi2_nobias_f64", build=rec_model(cls, "sequence", bias=False, **two), dtype=F64, seed=261 + 4 * i, **common),
            dict(name=f"{name}_bi2_f32", build=rec_model(cls, "last", **two), dtype=F32, seed=262 + 4 * i, **common),
        ]
    return ms


def model_list():
    ms = []
    for i, act in enumerate(ACTS):
        ms.append(dict(name=f"mlp_{act}_f64", build=mlp(ACTS[act]), input=[12], n=8, dtype=F64, seed=200 + i))
    ms += [
        dict(name="mlp_relu_f32", build=mlp(nn.ReLU), input=[12], n=8, dtype=F32, seed=230),
        dict(name="mlp_tanh_ls_f64", build=mlp(nn.Tanh), input=[12], n=8, dtype=F64, seed=231, label_smoothing=0.1),
        dict(name="mlp_penalty_f64", build=mlp(nn.ReLU), input=[12], n=8, dtype=F64, seed=232, l1=1e-3, l2=5e-3),
        dict(name="lenet_f32", build=lenet, input=[1, 28, 28], n=4, dtype=F32, seed=240, image=True),
        dict(name="cnn_misc_f64", build=cnn_misc, input=[3, 9, 9], n=3, dtype=F64, seed=241, l1=2e-3, l2=1e-2),
        dict(name="bn1d_train_f64", build=bn1d, input=[12], n=8, dtype=F64, seed=250, mode="train"),
        dict(name="bn1d_eval_f64", build=bn1d, input=[12], n=8, dtype=F64, seed=251),
        dict(name="bn1d_seq_train_f64", build=bn1d_seq, input=[4, 6], n=5, dtype=F64, seed=252, mode="train"),
        dict(name="bn2d_train_f64", build=bn2d, input=[3, 8, 8], n=6, dtype=F64, seed=253, mode="train"),
        dict(name="bn2d_eval_f64", build=bn2d, input=[3, 8, 8], n=6, dtype=F64, seed=254),
        dict(
            name="bn2d_train_penalty_f32",
            build=bn2d,
            input=[3, 8, 8],
            n=6,
            dtype=F32,
            seed=255,
            mode="train",
            l1=1e-3,
            l2=1e-2,
        ),
        dict(
            name="bn2d_train_ls_penalty_f32",
            build=bn2d,
            input=[3, 8, 8],
            n=6,
            dtype=F32,
            seed=258,
            mode="train",
            label_smoothing=0.2,
            l1=1e-3,
            l2=1e-2,
        ),
        dict(name="ln_seq_f64", build=ln_seq, input=[4, 6], n=5, dtype=F64, seed=260),
        dict(name="ln_seq_f32", build=ln_seq, input=[4, 6], n=5, dtype=F32, seed=261),
        dict(name="ln_flat_f64", build=ln_flat, input=[12], n=6, dtype=F64, seed=262),
        dict(name="ln_flat_f32", build=ln_flat, input=[12], n=6, dtype=F32, seed=263),
        dict(name="ln_2d_f64", build=ln_2d, input=[4, 6], n=5, dtype=F64, seed=264),
        dict(name="res_mlp_f64", build=res_mlp, input=[12], n=6, dtype=F64, seed=270),
        dict(name="res_mlp_f32", build=res_mlp, input=[12], n=6, dtype=F32, seed=271),
        dict(name="res_cnn_train_f64", build=res_cnn, input=[3, 5, 5], n=4, dtype=F64, seed=272, mode="train"),
        dict(name="res_cnn_train_f32", build=res_cnn, input=[3, 5, 5], n=4, dtype=F32, seed=273, mode="train"),
    ]
    ms += [
        dict(name="emb_pos_mean_f64", build=emb_pos_mean, input=[5], n=4, dtype=F64, seed=280, tokens=10),
        dict(name="emb_ln_first_f32", build=emb_ln_first, input=[5], n=4, dtype=F32, seed=281, tokens=7),
        dict(name="pos_last_f64", build=pos_last, input=[4, 3], n=4, dtype=F64, seed=282),
        dict(name="pos_last_f32", build=pos_last, input=[4, 3], n=4, dtype=F32, seed=283),
    ]
    return ms + recurrent_list() + attention_list()


def ill_conditioned_list():
    # Compared with f64 gradients from the same rounded weights and batch
    # (`ref64/grad/*`), not tensor by tensor with PyTorch's f32 ones: in such
    # batches both frameworks' f32 results carry 1e-5-level noise, and a small
    # gradient tensor's own relative error says nothing.
    common = dict(build=bn_illcond, input=[3, 4, 4], dtype=F32, mode="train", ref64=True)
    return [
        dict(name="bn_batch2_train_f32", n=2, seed=256, **common),
        dict(name="bn_offset_train_f32", n=8, seed=257, offset=100.0, spread=0.01, **common),
    ]


def penalty(model, l1, l2):
    total = torch.zeros((), dtype=next(model.parameters()).dtype)
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if l1:
                total = total + l1 * m.weight.abs().sum()
            if l2:
                total = total + l2 * (m.weight**2).sum()
    return total


def reference_grads_f64(model, x, target, mode, ls):
    m64 = copy.deepcopy(model).double()
    m64.train(mode == "train")
    F.cross_entropy(m64(x.double()), target, label_smoothing=ls).backward()
    return {f"ref64/grad/{k}": p.grad.detach().clone() for k, p in m64.named_parameters()}


def write_model(spec):
    name, dtype = spec["name"], spec["dtype"]
    mode = spec.get("mode", "eval")
    ls, l1, l2 = spec.get("label_smoothing", 0.0), spec.get("l1", 0.0), spec.get("l2", 0.0)
    torch.manual_seed(spec["seed"])
    model = spec["build"]().to(dtype)
    g = gen(spec["seed"] + 1000)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                # Non-trivial affine parameters and running statistics in both modes.
                c = m.num_features
                m.weight.copy_(1 + 0.3 * torch.randn(c, generator=g, dtype=F64))
                m.bias.copy_(0.2 * torch.randn(c, generator=g, dtype=F64))
                m.running_mean.copy_(0.5 * torch.randn(c, generator=g, dtype=F64))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g, dtype=F64))
                m.num_batches_tracked.fill_(3)
            if isinstance(m, nn.MultiheadAttention) and m.in_proj_bias is not None:
                # PyTorch starts these at 0; non-zero values test that they are added.
                m.in_proj_bias.copy_(0.2 * torch.randn(m.in_proj_bias.shape, generator=g, dtype=F64))
                m.out_proj.bias.copy_(0.2 * torch.randn(m.out_proj.bias.shape, generator=g, dtype=F64))
            if isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g, dtype=F64))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g, dtype=F64))
            if isinstance(m, PositionEmbedding):
                # Large enough to matter next to the input.
                m.weight.copy_(0.5 * torch.randn(m.weight.shape, generator=g, dtype=F64))
    n, shape = spec["n"], spec["input"]
    if "tokens" in spec:
        # int64 ids, as nn.Embedding takes them; the first is the padding id, if any.
        x = torch.randint(0, spec["tokens"], (n, *shape), generator=g)
        pad = model[0].padding_idx
        if pad is not None:
            x[0, 0] = pad
    elif spec.get("image"):
        x = torch.rand(n, *shape, generator=g, dtype=F64)
    elif "offset" in spec:
        x = spec["offset"] + spec["spread"] * torch.randn(n, *shape, generator=g, dtype=F64)
    else:
        x = 1.5 * torch.randn(n, *shape, generator=g, dtype=F64)
    if x.is_floating_point():
        x = x.to(dtype)
    classes = model[-1].out_features
    target = torch.randint(0, classes, (n,), generator=g)

    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(OUT / f"{name}.weights.safetensors"))
    save_file({"input": x, "target": target}, str(OUT / f"{name}.batch.safetensors"))
    (OUT / f"{name}.toml").write_text(toml_of(shape, model))

    # The same (rounded) weights and batch in f64: the reference that both
    # frameworks' f32 gradients are measured against.
    ref64 = reference_grads_f64(model, x, target, mode, ls) if spec.get("ref64") else {}

    model.train(mode == "train")
    # Token ids have no gradient.
    xi = x.clone().requires_grad_(x.is_floating_point())
    out = model(xi)
    data_loss = F.cross_entropy(out, target, label_smoothing=ls)
    loss = data_loss + penalty(model, l1, l2)
    loss.backward()
    exp = {"out": out.detach().clone(), "loss": loss.detach().clone(), "data_loss": data_loss.detach().clone()}
    for k, p in model.named_parameters():
        exp[f"grad/{k}"] = p.grad.detach().clone()
    if xi.requires_grad:
        exp["grad/input"] = xi.grad.detach().clone()
    for k, b in model.named_buffers():
        exp[f"state/{k}"] = b.detach().clone()
    exp.update(ref64)
    save_file(exp, str(OUT / f"{name}.expected.safetensors"))
    return {
        "name": name,
        "dtype": DT_NAME[dtype],
        "mode": mode,
        "loss": "cross_entropy",
        "label_smoothing": ls,
        "l1": l1,
        "l2": l2,
        "accuracy": (out.argmax(1) == target).double().mean().item(),
    }


# ---------------------------------------------------------------- optimizers


def optim_cases():
    """(name, torch constructor, kwargs, gradflow OptimizerSpec as JSON, per-step lr or None)."""
    o = torch.optim
    return [
        ("sgd_wd", o.SGD, dict(lr=0.1, weight_decay=0.01), dict(kind="sgd", lr=0.1, weight_decay=0.01)),
        (
            "sgd_momentum_dampening",
            o.SGD,
            dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
            dict(kind="sgd", lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
        ),
        (
            "sgd_nesterov",
            o.SGD,
            dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
            dict(kind="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        ),
        ("adam", o.Adam, dict(lr=0.01, weight_decay=0.01), dict(kind="adam", lr=0.01, weight_decay=0.01)),
        (
            "adam_amsgrad",
            o.Adam,
            dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, amsgrad=True),
            dict(kind="adam", lr=0.01, betas=[0.8, 0.99], eps=1e-6, weight_decay=0.05, amsgrad=True),
        ),
        ("adamw", o.AdamW, dict(lr=0.01, weight_decay=0.1), dict(kind="adamw", lr=0.01, weight_decay=0.1)),
        (
            "adamw_amsgrad",
            o.AdamW,
            dict(lr=0.02, weight_decay=0.3, amsgrad=True),
            dict(kind="adamw", lr=0.02, weight_decay=0.3, amsgrad=True),
        ),
        ("rmsprop", o.RMSprop, dict(lr=0.01, weight_decay=0.01), dict(kind="rmsprop", lr=0.01, weight_decay=0.01)),
        (
            "rmsprop_centered",
            o.RMSprop,
            dict(lr=0.01, alpha=0.9, weight_decay=0.01, centered=True),
            dict(kind="rmsprop", lr=0.01, alpha=0.9, weight_decay=0.01, centered=True),
        ),
        (
            "rmsprop_momentum",
            o.RMSprop,
            dict(lr=0.01, momentum=0.9, weight_decay=0.01),
            dict(kind="rmsprop", lr=0.01, momentum=0.9, weight_decay=0.01),
        ),
        (
            "rmsprop_centered_momentum",
            o.RMSprop,
            dict(lr=0.005, momentum=0.5, eps=1e-5, weight_decay=0.01, centered=True),
            dict(kind="rmsprop", lr=0.005, momentum=0.5, eps=1e-5, weight_decay=0.01, centered=True),
        ),
        (
            "adagrad",
            o.Adagrad,
            dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
            dict(kind="adagrad", lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
        ),
        ("adagrad_defaults", o.Adagrad, dict(lr=0.1), dict(kind="adagrad", lr=0.1)),
    ]


STEPS = 5
# A case whose lr changes between steps, as a schedule drives it (set_lr / param_groups).
LR_SEQUENCE = {"adamw": [0.01, 0.02, 0.005, 0.005, 0.001], "sgd_momentum_dampening": [0.1, 0.05, 0.05, 0.2, 0.1]}


def write_optim():
    tensors, meta = {}, []
    g = gen(300)
    init = {"w": torch.randn(3, 4, generator=g, dtype=F64), "b": torch.randn(3, generator=g, dtype=F64)}
    grads = [
        {"w": torch.randn(3, 4, generator=g, dtype=F64), "b": 0.1 * torch.randn(3, generator=g, dtype=F64)}
        for _ in range(STEPS)
    ]
    for name, ctor, kw, gf in optim_cases():
        for sched in [False, True]:
            if sched and name not in LR_SEQUENCE:
                continue
            case = name + ("_lr_changes" if sched else "")
            lrs = LR_SEQUENCE[name] if sched else None
            for dtype in (F64, F32):
                dt = DT_NAME[dtype]
                ps = {k: v.to(dtype).clone().requires_grad_(True) for k, v in init.items()}
                opt = ctor([ps["w"], ps["b"]], **kw)
                for k, v in ps.items():
                    tensors[f"{case}/{dt}/init/{k}"] = v.detach().clone()
                for t in range(STEPS):
                    if lrs:
                        for group in opt.param_groups:
                            group["lr"] = lrs[t]
                    for k, p in ps.items():
                        p.grad = grads[t][k].to(dtype).clone()
                        if dt == "f64":
                            tensors[f"{case}/grad{t}/{k}"] = grads[t][k].clone()
                    opt.step()
                    for k, p in ps.items():
                        tensors[f"{case}/{dt}/step{t}/{k}"] = p.detach().clone()
            meta.append({"name": case, "spec": gf, "steps": STEPS, "lrs": lrs})
    save_file(tensors, str(OUT / "optim.safetensors"), metadata={"cases": json.dumps(meta)})
    return len(meta)


# ---------------------------------------------------------------- schedules


def write_schedules():
    o, S = torch.optim, torch.optim.lr_scheduler
    plateau_metrics = [1.0, 0.9, 0.8, 0.8, 0.8, 0.79999, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.6, 0.61, 0.62, 0.63, 0.64, 0.5]
    max_metrics = [0.1, 0.2, 0.205, 0.21, 0.3, 0.3, 0.29, 0.31, 0.5, 0.5, 0.5, 0.5, 0.55, 0.4]
    cases = [
        ("step", 0.1, 12, lambda op: S.StepLR(op, step_size=3, gamma=0.5), dict(kind="step", step_size=3, gamma=0.5), None),
        ("exponential", 0.1, 10, lambda op: S.ExponentialLR(op, gamma=0.9), dict(kind="exponential", gamma=0.9), None),
        (
            "cosine",
            0.1,
            25,
            lambda op: S.CosineAnnealingLR(op, T_max=10, eta_min=0.001),
            dict(kind="cosine", t_max=10, eta_min=0.001),
            None,
        ),
        ("cosine_plain", 0.05, 8, lambda op: S.CosineAnnealingLR(op, T_max=8), dict(kind="cosine", t_max=8), None),
        (
            "warmup_cosine",
            0.1,
            12,
            lambda op: S.SequentialLR(
                op,
                [S.LinearLR(op, start_factor=0.25, total_iters=3), S.CosineAnnealingLR(op, T_max=7)],
                milestones=[3],
            ),
            dict(kind="warmup", epochs=3, start_factor=0.25, then=dict(kind="cosine", t_max=7)),
            None,
        ),
        (
            "warmup_step",
            0.2,
            10,
            lambda op: S.SequentialLR(
                op, [S.LinearLR(op, start_factor=0.5, total_iters=2), S.StepLR(op, step_size=2, gamma=0.5)], milestones=[2]
            ),
            dict(kind="warmup", epochs=2, start_factor=0.5, then=dict(kind="step", step_size=2, gamma=0.5)),
            None,
        ),
        (
            "warmup_only",
            0.3,
            8,
            lambda op: S.LinearLR(op, start_factor=1.0 / 3.0, total_iters=4),
            dict(kind="warmup", epochs=4, start_factor=1.0 / 3.0),
            None,
        ),
        (
            "plateau",
            0.1,
            len(plateau_metrics),
            lambda op: S.ReduceLROnPlateau(op, factor=0.5, patience=2, threshold=1e-4, cooldown=1, min_lr=0.02),
            dict(kind="plateau", factor=0.5, patience=2, threshold=1e-4, cooldown=1, min_lr=0.02),
            plateau_metrics,
        ),
        (
            "plateau_patience0",
            0.1,
            len(plateau_metrics),
            lambda op: S.ReduceLROnPlateau(op, factor=0.3, patience=0),
            dict(kind="plateau", factor=0.3, patience=0),
            plateau_metrics,
        ),
        (
            # Not expressible as a ScheduleSpec: the Rust test builds ReduceLrOnPlateau with a PlateauConfig.
            "plateau_max_abs",
            0.1,
            len(max_metrics),
            lambda op: S.ReduceLROnPlateau(
                op, mode="max", factor=0.3, patience=1, threshold=0.01, threshold_mode="abs", cooldown=2, min_lr=0.002
            ),
            None,
            max_metrics,
        ),
    ]
    out = []
    for name, base, steps, make, spec, metrics in cases:
        p = torch.zeros(1, requires_grad=True)
        opt = o.SGD([p], lr=base)
        sched = make(opt)
        lrs = [opt.param_groups[0]["lr"]]
        for i in range(steps):
            opt.step()
            if metrics is not None:
                sched.step(metrics[i])
            else:
                sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        entry = {"name": name, "base_lr": base, "spec": spec, "metrics": metrics, "lrs": lrs}
        if spec is None:
            entry["plateau"] = dict(
                mode="max", factor=0.3, patience=1, threshold=0.01, threshold_mode="abs", cooldown=2, min_lr=0.002
            )
        out.append(entry)
    (OUT / "schedules.json").write_text(json.dumps({"torch": torch.__version__, "cases": out}, indent=1) + "\n")
    return len(out)


# ---------------------------------------------------------------- gradflow -> PyTorch


def check_from_gradflow():
    """Load the gradflow-written state_dict into PyTorch (strict) and compare outputs."""
    (OUT / "from_gradflow_mlp.toml").write_text(toml_of([12], bn1d()))
    wpath, cpath = OUT / "from_gradflow_mlp.safetensors", OUT / "from_gradflow_mlp.check.safetensors"
    if not wpath.exists() or not cpath.exists():
        print(f"note: {wpath.name} not found; write it with\n"
              "  cargo test -p gradflow-nn --test parity -- --ignored write_from_gradflow_fixture\n"
              "and run this script again to check it loads into PyTorch.")
        return None
    model = bn1d().double()
    sd = load_file(str(wpath))
    want = model.state_dict()
    assert set(sd) == set(want), (sorted(sd), sorted(want))
    for k, v in sd.items():
        assert v.dtype == want[k].dtype, f"{k}: gradflow wrote {v.dtype}, PyTorch keeps {want[k].dtype}"
        assert v.shape == want[k].shape, f"{k}: gradflow wrote {tuple(v.shape)}, PyTorch has {tuple(want[k].shape)}"
    model.load_state_dict(sd, strict=True)
    model.eval()
    chk = load_file(str(cpath))
    with torch.no_grad():
        out = model(chk["input"])
    err = (out - chk["output"]).abs().max().item() / chk["output"].abs().max().item()
    assert err < 1e-12, f"outputs differ: relative error {err}"
    print(f"from_gradflow_mlp: loads with strict=True, {len(sd)} tensors, eval outputs agree (rel. err {err:.1e})")
    return {"tensors": sorted(sd), "rel_err": err}


def write_only(names):
    """Write only the named model fixtures and merge them into the manifest,
    leaving every other fixture file as it is (a new torch version may round
    differently in the last bit)."""
    specs = [m for m in model_list() if m["name"] in names]
    missing = set(names) - {m["name"] for m in specs}
    if missing:
        sys.exit(f"no such model fixture: {', '.join(sorted(missing))}")
    path = OUT / "manifest.json"
    manifest = json.loads(path.read_text())
    order = [m["name"] for m in model_list()]
    models = {m["name"]: m for m in manifest["models"]}
    for spec in specs:
        models[spec["name"]] = write_model(spec)
    manifest["models"] = sorted(models.values(), key=lambda m: order.index(m["name"]))
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {', '.join(m['name'] for m in specs)} (torch {torch.__version__})")


def main():
    if sys.argv[1:2] == ["--only"]:
        write_only(sys.argv[2:])
        return
    OUT.mkdir(parents=True, exist_ok=True)
    if sys.argv[1:] == ["--only", "ops_ties"]:
        # Adds this one fixture without rewriting the others under another torch version.
        print(f"wrote {write_ops(F64, tie_cases(), 'ops_ties')} tie cases")
        return
    n64 = write_ops(F64)
    nties = write_ops(F64, tie_cases(), "ops_ties")
    n32 = write_ops(F32)
    models = [write_model(m) for m in model_list()]
    ill = [write_model(m) for m in ill_conditioned_list()]
    nopt = write_optim()
    nsched = write_schedules()
    fg = check_from_gradflow()
    manifest = {
        "torch": torch.__version__,
        "models": models,
        "ill_conditioned": ill,
        "from_gradflow": fg,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(f.stat().st_size for f in OUT.iterdir() if f.is_file())
    print(
        f"wrote {n64}+{n32} op cases, {nties} tie cases, {len(models)} models, {nopt} optimizer and {nsched} schedule cases "
        f"to {OUT.relative_to(ROOT)} ({total / 1024:.0f} KiB)"
    )
    if total > 2 * 1024 * 1024:
        sys.exit("fixtures exceed 2 MB")


if __name__ == "__main__":
    main()
