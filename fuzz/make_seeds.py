#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (small, committed).

Run from anywhere: python3 fuzz/make_seeds.py. Deterministic; only the
standard library is needed. The checkpoint seeds follow the format of
crates/gradflow-train/src/checkpoint.rs (safetensors + JSON metadata with a
CRC-32 over each tensor's name and its values as little-endian f64, and
a CRC-32 of the JSON text under `gradflow_crc32`).
"""
import gzip
import json
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
PRESETS = os.path.join(HERE, "..", "crates", "gradflow-nn", "src", "presets")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gz(data):
    return gzip.compress(data, compresslevel=6, mtime=0)


# ---------------------------------------------------------------- idx
def idx_images(count, rows, cols, pixels):
    return struct.pack(">IIII", 0x803, count, rows, cols) + bytes(pixels)


def idx_labels(labels):
    return struct.pack(">II", 0x801, len(labels)) + bytes(labels)


img = idx_images(2, 3, 3, range(18))
lab = idx_labels([3, 1, 4, 1, 5])
# First byte: bit 0 = labels, bit 1 = gzip the rest inside the harness.
put("idx", "images_raw", b"\x00" + img)
put("idx", "labels_raw", b"\x01" + lab)
put("idx", "images_harness_gz", b"\x02" + img)
put("idx", "labels_harness_gz", b"\x03" + lab)
put("idx", "images_gz", b"\x00" + gz(img))
put("idx", "labels_gz", b"\x01" + gz(lab))
put("idx", "images_empty", b"\x00" + idx_images(0, 28, 28, []))
put("idx", "huge_header", b"\x00" + idx_images(4_000_000_000, 28, 28, [0] * 84))
put("idx", "huge_header_gz", b"\x02" + idx_images(4_000_000_000, 28, 28, [0] * 84))
put("idx", "max_dims", b"\x00" + struct.pack(">IIII", 0x803, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF))
put("idx", "wrong_magic", b"\x00" + lab)
put("idx", "multi_member_gz", b"\x01" + gz(lab[:6]) + gz(lab[6:]))

# ---------------------------------------------------------------- csv
# First byte: bit 0 = regression, bits 1-2 = delimiter , ; \t space.
put("csv", "classes", b"\x00" + b"a,b,label\n1,2,cat\n3,4.5,dog\n-1e3,0,cat\n")
put("csv", "int_classes", b"\x00" + b"label,x\n10,1\n9,2\n-1,3\n")
put("csv", "regression_semicolon", b"\x03" + b"x;y;label\n1;2;0.5\n3;4;1.5e2\n")
put("csv", "tab_quoted", b"\x04" + b'"a"\t"label"\n"1"\t"x y"\n\n2\tz\n')
put("csv", "space_bom", b"\x07" + "\ufeffa label\n1 2\n".encode())
put("csv", "ragged", b"\x00" + b"a,label\n1,2,3\n")
put("csv", "bad_value", b"\x01" + b"a,label\nNaN,1\ninf,2\n")

# ---------------------------------------------------------------- model_toml
for name in sorted(os.listdir(PRESETS)):
    with open(os.path.join(PRESETS, name), "rb") as f:
        put("model_toml", "preset_" + name, f.read())
put("model_toml", "every_layer", """input = [2, 8, 8]
[[layer]]
type = "Conv2d"
out_channels = 4
kernel_size = [3, 2]
stride = 1
padding = [1, 0]
dilation = 1
groups = 2
bias = false
l1 = 0.001
init = "he"
[[layer]]
type = "BatchNorm2d"
eps = 1e-5
momentum = 0.1
[[layer]]
type = "LeakyReLU"
negative_slope = 0.2
[[layer]]
type = "MaxPool2d"
kernel_size = 2
[[layer]]
type = "AvgPool2d"
kernel_size = [2, 1]
stride = 1
padding = [1, 0]
[[layer]]
type = "Flatten"
[[layer]]
type = "Dropout"
p = 0.25
[[layer]]
type = "Linear"
out_features = 5
l2 = 0.01
init = "xavier_normal"
[[layer]]
type = "BatchNorm1d"
[[layer]]
type = "GELU"
approximate = "tanh"
[[layer]]
type = "Softplus"
beta = 2
threshold = 10.0
[[layer]]
type = "Hardtanh"
min_val = -2.0
max_val = 2.0
[[layer]]
type = "ELU"
alpha = 0.5
[[layer]]
type = "Linear"
out_features = 3
""")
put("model_toml", "activations", "input = [4]\n" + "".join(
    '[[layer]]\ntype = "%s"\n' % a
    for a in ["ReLU", "SELU", "SiLU", "Sigmoid", "Tanh", "Softsign", "GELU", "Flatten"]))
put("model_toml", "huge_linear", 'input = [784]\n[[layer]]\ntype = "Linear"\nout_features = 1000000000000\n')
put("model_toml", "huge_input", 'input = [100000, 100000, 100000]\n[[layer]]\ntype = "Flatten"\n')
put("model_toml", "shape_mismatch", 'input = [1, 28, 28]\n[[layer]]\ntype = "Linear"\nout_features = 10\n')

# ---------------------------------------------------------------- safetensors
def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def f32(vals):
    return struct.pack("<%df" % len(vals), *vals)


def f64(vals):
    return struct.pack("<%dd" % len(vals), *vals)


def i64(vals):
    return struct.pack("<%dq" % len(vals), *vals)


put("safetensors", "linear_f32", safetensors([
    ("0.weight", "F32", [3, 2], f32([0.1, -0.2, 0.3, 0.4, -0.5, 0.6])),
    ("0.bias", "F32", [3], f32([0.0, 1.0, -1.0])),
]))
put("safetensors", "batchnorm_mixed", safetensors([
    ("0.weight", "F64", [3, 2], f64([1, 2, 3, 4, 5, 6])),
    ("0.bias", "F64", [3], f64([0, 0, 0])),
    ("1.weight", "F32", [3], f32([1, 1, 1])),
    ("1.bias", "F32", [3], f32([0, 0, 0])),
    ("1.running_mean", "F32", [3], f32([0, 0, 0])),
    ("1.running_var", "F32", [3], f32([1, 1, 1])),
    ("1.num_batches_tracked", "I64", [], i64([7])),
], {"format": "pt"}))
put("safetensors", "zero_sized", safetensors([("e", "F32", [0, 4], b""), ("s", "F64", [], f64([2.5]))]))
put("safetensors", "bad_dtype", safetensors([("x", "F16", [2], b"\x00\x3c\x00\x3c")]))


# ---------------------------------------------------------------- checkpoint
def checkpoint(optimizer, buffers, schedule, scalars, step, meta_crc=True):
    """A tiny checkpoint of `input = [2]` + Linear(3), as trainer.rs writes it."""
    model = [("0.weight", [3, 2], [0.5, -0.25, 0.125, 1.0, -1.0, 0.75]), ("0.bias", [3], [0.1, 0.2, 0.3])]
    opt = [("optimizer/" + n, s, v) for n, s, v in sorted(buffers)]
    crc = 0
    for name, _, vals in model + opt:
        crc = zlib.crc32(name.encode(), crc)
        for v in vals:
            crc = zlib.crc32(struct.pack("<d", struct.unpack("<f", struct.pack("<f", v))[0]), crc)
    config = {
        "model": "tiny.toml", "epochs": 3, "batch_size": 16, "lr": 0.01, "optimizer": optimizer,
        "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "l1": 0.0, "l2": 0.0, "dropout": None,
        "activation": None, "init": None, "schedule": schedule.get("inner", schedule)["kind"],
        "warmup_epochs": 2 if "inner" in schedule else 0,
        "early_stopping": None, "min_delta": 0.0, "val_split": 0.0, "max_norm": None, "clip_norm": None,
        "clip_value": None, "label_smoothing": 0.0, "seed": 0, "limit_train": 100, "limit_test": 50,
        "diagnostics_every": 50,
    }
    meta = {
        "version": 1, "epoch": 1, "step_in_epoch": 0, "global_step": step, "rng_word_pos": 0,
        "model_toml": 'input = [2]\n\n[[layer]]\ntype = "Linear"\nout_features = 3\n',
        "config": config, "optimizer_kind": optimizer, "optimizer_step": step,
        "optimizer_scalars": scalars, "schedule": schedule,
        "history": [{
            "epoch": 1, "train_loss": 1.5, "train_data_loss": 1.5, "train_penalty": 0.0,
            "train_accuracy": 0.5, "val_loss": None, "val_accuracy": None, "lr": 0.01, "seconds": 0.01,
            "samples_per_second": 10000.0, "weight_sparsity": 0.0, "weight_norm": 1.0,
        }],
        "best": [1.5, 1], "partial": {}, "checksum": crc,
    }
    tensors = [(n, "F32", s, f32(v)) for n, s, v in model + opt]
    text = json.dumps(meta)
    md = {"gradflow": text}
    if meta_crc:
        md["gradflow_crc32"] = "%08x" % zlib.crc32(text.encode())
    return safetensors(tensors, md)


moments = lambda kind: [(f"{kind}/0.weight", [3, 2], [0.01] * 6), (f"{kind}/0.bias", [3], [0.02] * 3)]
put("checkpoint", "adam_cosine", checkpoint(
    "adam", moments("exp_avg") + moments("exp_avg_sq"),
    {"kind": "cosine", "last_epoch": 1, "scalars": {"base_lr": 0.01}},
    {"lr": 0.005, "step/0.bias": 7.0, "step/0.weight": 7.0}, 7))
put("checkpoint", "sgd_constant", checkpoint(
    "sgd", moments("momentum_buffer"),
    {"kind": "constant", "last_epoch": 1, "scalars": {"base_lr": 0.01}},
    {"lr": 0.01}, 7))
# Without the metadata checksum (the format before it existed, still read):
# mutations of the JSON then reach the metadata parser and what follows.
put("checkpoint", "legacy_adam_cosine", checkpoint(
    "adam", moments("exp_avg") + moments("exp_avg_sq"),
    {"kind": "cosine", "last_epoch": 1, "scalars": {"base_lr": 0.01}},
    {"lr": 0.005, "step/0.bias": 7.0, "step/0.weight": 7.0}, 7, meta_crc=False))
put("checkpoint", "legacy_plateau_warmup", checkpoint(
    "sgd", moments("momentum_buffer"),
    {"kind": "warmup", "last_epoch": 1, "scalars": {"base_lr": 0.01, "start_factor": 0.5, "epochs": 2.0},
     "inner": {"kind": "plateau", "last_epoch": 0, "scalars": {"base_lr": 0.01}}},
    {"lr": 0.01}, 7, meta_crc=False))
put("checkpoint", "not_gradflow", open(os.path.join(CORPUS, "safetensors", "linear_f32"), "rb").read())
