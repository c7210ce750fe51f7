"""Run a saved sparsevar member in numpy, from its safetensors file alone.

    python numpy_forward.py WEIGHTS.safetensors INPUTS.txt LOGITS_OUT.csv

Reads the model config from the file's metadata (no sparsevar code, no torch), computes the
logits of every input in INPUTS.txt (one input per line, tokens separated by spaces) in
float64 from the float32 tensors, and writes them as CSV (one row per input). The test
`weights.rs` compares them with `sparsevar eval`'s logits; the book's "Saved weights"
chapter documents every tensor this script reads.
"""

import json
import math
import sys

import numpy as np
from safetensors import safe_open


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)  # biased, eps inside the root
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    # The tanh approximation (PyTorch's approximate="tanh").
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def linear(x, p, name):
    return x @ p[name + ".weight"].T + p[name + ".bias"]


def attention_weights(kind, scores, head_dim):
    n = scores.shape[-1]  # keys: CLS and the T input positions
    s = scores / math.sqrt(head_dim)
    if kind == "softmax":
        e = np.exp(s - s.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    if kind == "relu":
        return np.maximum(s, 0.0) / n
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-(s - math.log(n))))
    if kind == "linear":
        return s / n
    if kind == "uniform":
        return np.full_like(s, 1.0 / n)
    raise SystemExit(f"attention variant {kind!r} is not built in")


def sinusoidal(n, d):
    out = np.zeros((n, d))
    for p in range(n):
        for i in range(d):
            a = p / 10000 ** ((2 * (i // 2)) / d)
            out[p, i] = math.sin(a) if i % 2 == 0 else math.cos(a)
    return out


def transformer(p, cfg, tokens):
    b, t = tokens.shape
    d, heads = cfg["d_model"], cfg["heads"]
    dh = d // heads
    eps = cfg["ln_eps"]
    pre, post = cfg["norm"] == "pre", cfg["norm"] == "post"
    # Position 0 is the CLS token, input bit i sits at position i + 1.
    x = np.concatenate([np.broadcast_to(p["cls"], (b, 1, d)), p["embed.token"][tokens]], axis=1)
    if cfg["positions"] == "learned":
        x = x + p["embed.position"]
    elif cfg["positions"] == "sinusoidal":
        x = x + sinusoidal(t + 1, d)
    for l in range(cfg["layers"]):
        pre_l = f"layers.{l}."
        h = layer_norm(x, p[pre_l + "ln1.weight"], p[pre_l + "ln1.bias"], eps) if pre else x

        def split(z):
            return z.reshape(b, t + 1, heads, dh).transpose(0, 2, 1, 3)

        q, k, v = (split(linear(h, p, pre_l + "attn." + n)) for n in "qkv")
        w = attention_weights(cfg["attention"], q @ k.transpose(0, 1, 3, 2), dh)
        o = (w @ v).transpose(0, 2, 1, 3).reshape(b, t + 1, d)
        x = x + linear(o, p, pre_l + "attn.o")
        if post:
            x = layer_norm(x, p[pre_l + "ln1.weight"], p[pre_l + "ln1.bias"], eps)
        if cfg["mlp"] > 0:
            h = layer_norm(x, p[pre_l + "ln2.weight"], p[pre_l + "ln2.bias"], eps) if pre else x
            x = x + linear(gelu(linear(h, p, pre_l + "mlp.fc1")), p, pre_l + "mlp.fc2")
            if post:
                x = layer_norm(x, p[pre_l + "ln2.weight"], p[pre_l + "ln2.bias"], eps)
    pooled = x[:, 0] if cfg["readout"] == "cls" else x.mean(1)
    if pre:
        pooled = layer_norm(pooled, p["final_norm.weight"], p["final_norm.bias"], eps)
    return linear(pooled, p, "readout")


def mlp(p, cfg, tokens, alphabet):
    # Bits as ±1; larger alphabets one-hot per position.
    x = np.where(tokens == 1, 1.0, -1.0) if alphabet == 2 else np.eye(alphabet)[tokens].reshape(len(tokens), -1)
    for l in range(cfg["depth"]):
        x = np.maximum(linear(x, p, f"layers.{l}"), 0.0)
    return linear(x, p, "readout")


def main():
    weights, inputs, out = sys.argv[1:4]
    with safe_open(weights, framework="numpy") as f:
        meta = f.metadata()
        p = {k: f.get_tensor(k).astype(np.float64) for k in f.keys()}
    model = json.loads(meta["model"])
    data = json.loads(meta["data"])
    tokens = np.array([[int(x) for x in line.split()] for line in open(inputs) if line.strip()], dtype=np.int64)
    assert tokens.shape[1] == data["T"], (tokens.shape, data)
    if model["kind"] == "transformer":
        logits = transformer(p, model, tokens)
    else:
        logits = mlp(p, model, tokens, data["alphabet"])
    np.savetxt(out, logits, delimiter=",", fmt="%.17g")


if __name__ == "__main__":
    main()
