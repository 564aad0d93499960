#!/usr/bin/env python3
"""Converts between a PyTorch state_dict (nn.RNN / nn.GRU / nn.LSTM + nn.Linear) and a
libgpurnn checkpoint (format version 3, docs/checkpoint-format.md), both ways.

    torch_checkpoint.py to-gpurnn STATE_DICT.pt OUT.ckpt [options]
    torch_checkpoint.py to-torch CHECKPOINT.ckpt OUT.pt [--state STATE.pt]

The PyTorch model this maps onto reads one-hot tokens (input_size = V, no nn.Embedding),
time-major, unidirectional, without projections:

    rnn = nn.GRU(V, H, num_layers=L)            # or nn.RNN(..., nonlinearity=...), nn.LSTM
    linear = nn.Linear(H, V)
    logits = linear(rnn(one_hot(x, V).to(dtype), h0)[0])

Tensor by tensor (README.md, "PyTorch interoperability"):

    rnn.weight_ih_l{l}  <->  W_ih_l  (G*H, V for l = 0, else H)    G = 1, 3 (r,z,n), 4 (i,f,g,o)
    rnn.weight_hh_l{l}  <->  W_hh_l  (G*H, H)
    rnn.bias_ih_l{l}    <->  b_ih_l  (G*H)     GRU, LSTM
    rnn.bias_hh_l{l}    <->  b_hh_l  (G*H)     GRU, LSTM
    rnn.bias_ih_l{l} + rnn.bias_hh_l{l}  ->  b_l (H)   tanh, ReLU: one bias per layer,
                        b_l  ->  bias_ih_l{l} = b_l, bias_hh_l{l} = 0   (the same function)
    linear.weight       <->  Why     (V, H)
    linear.bias         <->  by      (V)
    h0 (L, B, H), c0 (L, B, H)  <->  the carried state  (to-gpurnn --state / to-torch --state)

The prefixes (`rnn.`, `linear.`) are found from the keys (the one module with weight_ih_l0,
the one Linear of shape (V, H)) or given with --rnn-prefix and --linear-prefix. Values
keep their bits: float32 stays float32 and float64 float64 unless --dtype asks
otherwise. A checkpoint written here has no optimizer state and no user data (so
gpurnn-charrnn, which keeps its vocabulary in the user data, cannot resume it; a C
program loads it with gpurnn_model_load).

Exit status: 0 on success, 1 with a message naming the bad key or value, 2 for bad
command-line arguments. Needs torch (and numpy, which torch brings); nothing in the
build uses this script.
"""
import argparse
import struct
import sys

MAGIC = b"\x89GPURNN\n"
VERSION = 3
HEADER_BYTES = 120
CELLS = ["tanh", "relu", "gru", "lstm"]
GATES = {"tanh": 1, "relu": 1, "gru": 3, "lstm": 4}
MAX_LAYERS = 1024
USER_DATA_MAX = 1 << 26


class ConversionError(Exception):
    pass


# ---- CRC-64/XZ (docs/checkpoint-format.md, "Checksum") ----------------------------------

def _crc64_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xC96C5795D7870F42 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC_TABLE = _crc64_table()


def crc64_xz(data):
    crc = 0xFFFFFFFFFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


# ---- the flat layout (DESIGN.md "Cells and layers"; src/layout.c) -------------------------

def layout(cell, L, V, H):
    """[(name, shape, offset)] in the flat parameter vector's order, and its length."""
    G = GATES[cell]
    tensors = []
    offset = 0

    def add(name, shape):
        nonlocal offset
        tensors.append((name, shape, offset))
        size = 1
        for d in shape:
            size *= d
        offset += size

    for l in range(L):
        add(f"W_ih_l{l}", (G * H, V if l == 0 else H))
        add(f"W_hh_l{l}", (G * H, H))
    add("Why", (V, H))
    for l in range(L):
        if GATES[cell] == 1:
            add(f"b_l{l}", (H,))
        else:
            add(f"b_ih_l{l}", (G * H,))
            add(f"b_hh_l{l}", (G * H,))
    add("by", (V,))
    return tensors, offset


# ---- state_dict -> flat ---------------------------------------------------------------

def find_prefixes(state_dict, rnn_prefix, linear_prefix):
    keys = list(state_dict.keys())
    if rnn_prefix is None:
        found = [k[: -len("weight_ih_l0")] for k in keys if k.endswith("weight_ih_l0")]
        if len(found) != 1:
            raise ConversionError(
                f"found {len(found)} recurrent modules (keys ending in weight_ih_l0: {found}); "
                "name one with --rnn-prefix")
        rnn_prefix = found[0]
    if linear_prefix is None:
        H = state_dict[rnn_prefix + "weight_hh_l0"].shape[1] if rnn_prefix + "weight_hh_l0" in state_dict else None
        found = []
        for k in keys:
            if k.startswith(rnn_prefix) or not k.endswith("weight"):
                continue
            w = state_dict[k]
            base = k[: -len("weight")]
            if w.dim() == 2 and w.shape[1] == H and base + "bias" in state_dict:
                found.append(base)
        if len(found) != 1:
            raise ConversionError(
                f"found {len(found)} output layers (a 2-D weight of H = {H} columns with a bias, outside "
                f"'{rnn_prefix}': {found}); name one with --linear-prefix")
        linear_prefix = found[0]
    return rnn_prefix, linear_prefix


def read_state_dict(state_dict, nonlinearity, rnn_prefix=None, linear_prefix=None):
    """Checks a state_dict and returns (cell, L, V, H, {flat tensor name: tensor})."""
    rnn, fc = find_prefixes(state_dict, rnn_prefix, linear_prefix)
    for k in state_dict:
        if k.startswith(rnn) and ("_reverse" in k or "weight_hr" in k):
            raise ConversionError(f"{k}: bidirectional and projected (proj_size) RNNs have no libgpurnn "
                                  "counterpart")
    L = 0
    while f"{rnn}weight_ih_l{L}" in state_dict:
        L += 1
    if L > MAX_LAYERS:
        raise ConversionError(f"{L} layers, more than libgpurnn's {MAX_LAYERS}")
    for k in (f"{rnn}weight_hh_l0", f"{fc}weight", f"{fc}bias"):
        if k not in state_dict:
            raise ConversionError(f"{k} is missing")
    W_hh0 = state_dict[f"{rnn}weight_hh_l0"]
    H = W_hh0.shape[1]
    if W_hh0.dim() != 2 or H < 1 or W_hh0.shape[0] % H:
        raise ConversionError(f"{rnn}weight_hh_l0 has shape {tuple(W_hh0.shape)}, not (G*H, H)")
    G = W_hh0.shape[0] // H
    if G == 1:
        if nonlinearity not in ("tanh", "relu"):
            raise ConversionError(f"--nonlinearity {nonlinearity}: one gate means tanh or relu")
        cell = nonlinearity
    elif G == 3:
        cell = "gru"
    elif G == 4:
        cell = "lstm"
    else:
        raise ConversionError(f"{rnn}weight_hh_l0 has {G}*H rows (H = {H}): not 1 (RNN), 3 (GRU) or 4 (LSTM) gates")
    V = state_dict[f"{rnn}weight_ih_l0"].shape[1]

    def get(key, shape):
        if key not in state_dict:
            raise ConversionError(f"{key} is missing (a {cell} model of {L} layers, H = {H}, V = {V})")
        t = state_dict[key]
        if tuple(t.shape) != shape:
            raise ConversionError(f"{key} has shape {tuple(t.shape)}, expected {shape} "
                                  f"(a {cell} model of {L} layers, H = {H}, V = {V})")
        if not t.dtype.is_floating_point:
            raise ConversionError(f"{key} has dtype {t.dtype}, not a floating-point type")
        return t.detach()

    tensors = {}
    for l in range(L):
        tensors[f"W_ih_l{l}"] = get(f"{rnn}weight_ih_l{l}", (G * H, V if l == 0 else H))
        tensors[f"W_hh_l{l}"] = get(f"{rnn}weight_hh_l{l}", (G * H, H))
        has_bias = f"{rnn}bias_ih_l{l}" in state_dict
        if has_bias:
            b_ih = get(f"{rnn}bias_ih_l{l}", (G * H,))
            b_hh = get(f"{rnn}bias_hh_l{l}", (G * H,))
        else:  # bias=False: zero biases are the same function
            b_ih = b_hh = tensors[f"W_hh_l{l}"].new_zeros(G * H)
        if G == 1:
            tensors[f"b_l{l}"] = b_ih + b_hh
        else:
            tensors[f"b_ih_l{l}"] = b_ih
            tensors[f"b_hh_l{l}"] = b_hh
    tensors["Why"] = get(f"{fc}weight", (V, H))
    tensors["by"] = get(f"{fc}bias", (V,))
    return cell, L, V, H, tensors


def flatten(cell, L, V, H, tensors, torch_dtype):
    import torch

    order, count = layout(cell, L, V, H)
    flat = torch.empty(count, dtype=torch_dtype)
    for name, shape, offset in order:
        t = tensors[name]
        n = t.numel()
        flat[offset: offset + n] = t.reshape(-1).to(torch_dtype)
    return flat


# ---- checkpoint bytes -------------------------------------------------------------------

def write_checkpoint(path, cell, L, V, H, B, max_T, reduction, flat, state):
    """Writes a version-3 checkpoint: no optimizer state, no user data."""
    import torch

    f64 = flat.dtype == torch.float64
    e = 8 if f64 else 4
    P = flat.numel()
    S = state.numel()
    file_size = HEADER_BYTES + e * (P + S) + 8
    header = bytearray(HEADER_BYTES)
    header[0:8] = MAGIC
    struct.pack_into("<IIIIIIII", header, 8, VERSION, 1 if f64 else 0, e, V, H, B, max_T,
                     0 if reduction == "sum" else 1)
    struct.pack_into("<Qd", header, 40, 0, 0.01)                 # seed, init_scale: for the record
    struct.pack_into("<IIQII", header, 56, 0, 0, 0, 0, 0)        # no optimizer state
    struct.pack_into("<QQQQ", header, 80, P, S, file_size, 0)    # no user data
    struct.pack_into("<II", header, 112, CELLS.index(cell), L)
    body = bytes(header) + values_bytes(flat) + values_bytes(state.to(flat.dtype))
    data = body + struct.pack("<Q", crc64_xz(body))
    assert len(data) == file_size
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    import os
    os.replace(tmp, path)


def values_bytes(t):
    """Little-endian IEEE bytes of a 1-D float tensor, whatever the host's byte order."""
    import numpy as np

    a = t.detach().cpu().contiguous().numpy()
    return a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def read_checkpoint(path):
    """Returns (config dict, flat params, state) of a version 1-3 checkpoint."""
    import numpy as np
    import torch

    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8 or data[:8] != MAGIC:
        raise ConversionError(f"{path}: not a libgpurnn checkpoint (bad magic)")
    version, dtype, e, V, H, B, max_T, reduction = struct.unpack_from("<IIIIIIII", data, 8)
    if version not in (1, 2, 3):
        raise ConversionError(f"{path}: checkpoint format version {version} is not supported (1 to 3)")
    header_bytes = {1: 104, 2: 112, 3: 120}[version]
    if len(data) < header_bytes + 8:
        raise ConversionError(f"{path}: truncated ({len(data)} bytes)")
    if dtype not in (0, 1) or e != (4 if dtype == 0 else 8):
        raise ConversionError(f"{path}: dtype = {dtype} with element_bytes = {e}")
    stored_crc = struct.unpack_from("<Q", data, len(data) - 8)[0]
    if crc64_xz(data[:-8]) != stored_crc:
        raise ConversionError(f"{path}: checksum mismatch (the file is damaged)")
    slots = struct.unpack_from("<I", data, 72)[0]
    P, S, file_size = struct.unpack_from("<QQQ", data, 80)
    user = struct.unpack_from("<Q", data, 104)[0] if version >= 2 else 0
    cell_id, L = struct.unpack_from("<II", data, 112) if version >= 3 else (0, 1)
    if file_size != len(data):
        raise ConversionError(f"{path}: file_size = {file_size} but the file has {len(data)} bytes")
    if cell_id >= len(CELLS):
        raise ConversionError(f"{path}: cell = {cell_id} is not a libgpurnn cell")
    cell = CELLS[cell_id]
    if not 1 <= L <= MAX_LAYERS:
        raise ConversionError(f"{path}: num_layers = {L}")
    _, count = layout(cell, L, V, H)
    if P != count:
        raise ConversionError(f"{path}: param_count = {P}, but a {cell} model of {L} layers with V = {V}, "
                              f"H = {H} has {count}")
    if user > USER_DATA_MAX or header_bytes + e * (P * (1 + slots) + S) + user + 8 != file_size:
        raise ConversionError(f"{path}: the sizes in the header do not add up to file_size = {file_size}")
    np_dtype = np.dtype("<f8" if dtype == 1 else "<f4")
    params = np.frombuffer(data, np_dtype, P, header_bytes)
    state = np.frombuffer(data, np_dtype, S, header_bytes + e * P * (1 + slots))
    to_torch = lambda a: torch.from_numpy(a.astype(a.dtype.newbyteorder("="), copy=True))
    config = {"cell": cell, "num_layers": L, "vocab_size": V, "hidden_size": H, "batch_size": B,
              "max_seq_len": max_T, "reduction": "sum" if reduction == 0 else "mean", "version": version}
    return config, to_torch(params), to_torch(state)


# ---- commands ---------------------------------------------------------------------------

def to_gpurnn(args):
    import torch

    state_dict = torch.load(args.state_dict, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict):
        raise ConversionError(f"{args.state_dict}: holds a {type(state_dict).__name__}, not a state_dict")
    cell, L, V, H, tensors = read_state_dict(state_dict, args.nonlinearity, args.rnn_prefix, args.linear_prefix)
    if args.dtype:
        torch_dtype = torch.float32 if args.dtype == "f32" else torch.float64
    else:
        torch_dtype = tensors["Why"].dtype
        if torch_dtype not in (torch.float32, torch.float64):
            raise ConversionError(f"the tensors are {torch_dtype}; choose --dtype f32 or f64")
    flat = flatten(cell, L, V, H, tensors, torch_dtype)
    B = args.batch
    S_shape = (L, B, H)
    if args.state:
        saved = torch.load(args.state, map_location="cpu", weights_only=True)
        parts = [saved.get("h")] + ([saved.get("c")] if cell == "lstm" else [])
        for name, part in zip(("h", "c"), parts):
            if part is None or tuple(part.shape) != S_shape:
                got = None if part is None else tuple(part.shape)
                raise ConversionError(f"{args.state}: '{name}' has shape {got}, expected {S_shape} "
                                      f"(L, B, H with --batch {B})")
        state = torch.cat([p.reshape(-1).to(torch_dtype) for p in parts])
    else:
        state = torch.zeros(L * B * H * (2 if cell == "lstm" else 1), dtype=torch_dtype)
    if not bool(torch.isfinite(flat).all()) or not bool(torch.isfinite(state).all()):
        raise ConversionError("a parameter or state value is not finite in the chosen dtype")
    write_checkpoint(args.out, cell, L, V, H, B, args.max_seq_len, args.reduction, flat, state)
    print(f"{args.out}: {cell}, {L} layer(s), V = {V}, H = {H}, B = {B}, "
          f"{'float64' if torch_dtype == torch.float64 else 'float32'}, {flat.numel()} parameters")


def unflatten(config, params, rnn_prefix="rnn.", linear_prefix="linear."):
    """The state_dict of a checkpoint's flat parameter vector."""
    cell, L, V, H = config["cell"], config["num_layers"], config["vocab_size"], config["hidden_size"]
    order, _ = layout(cell, L, V, H)
    flat = {}
    for name, shape, offset in order:
        n = 1
        for d in shape:
            n *= d
        flat[name] = params[offset: offset + n].reshape(shape).clone()
    sd = {}
    for l in range(L):
        sd[f"{rnn_prefix}weight_ih_l{l}"] = flat[f"W_ih_l{l}"]
        sd[f"{rnn_prefix}weight_hh_l{l}"] = flat[f"W_hh_l{l}"]
    for l in range(L):
        if GATES[cell] == 1:
            sd[f"{rnn_prefix}bias_ih_l{l}"] = flat[f"b_l{l}"]
            sd[f"{rnn_prefix}bias_hh_l{l}"] = flat[f"b_l{l}"].new_zeros(H)
        else:
            sd[f"{rnn_prefix}bias_ih_l{l}"] = flat[f"b_ih_l{l}"]
            sd[f"{rnn_prefix}bias_hh_l{l}"] = flat[f"b_hh_l{l}"]
    sd[f"{linear_prefix}weight"] = flat["Why"]
    sd[f"{linear_prefix}bias"] = flat["by"]
    return sd


def to_torch(args):
    import torch

    config, params, state = read_checkpoint(args.checkpoint)
    sd = unflatten(config, params, args.rnn_prefix or "rnn.", args.linear_prefix or "linear.")
    torch.save(sd, args.out)
    L, B, H = config["num_layers"], config["batch_size"], config["hidden_size"]
    if args.state:
        n = L * B * H
        saved = {"h": state[:n].reshape(L, B, H).clone()}
        if config["cell"] == "lstm":
            saved["c"] = state[n:].reshape(L, B, H).clone()
        torch.save(saved, args.state)
    module = {"tanh": "nn.RNN", "relu": "nn.RNN", "gru": "nn.GRU", "lstm": "nn.LSTM"}[config["cell"]]
    extra = ", nonlinearity='relu'" if config["cell"] == "relu" else ""
    print(f"{args.out}: {module}({config['vocab_size']}, {H}, num_layers={L}{extra}) as rnn + "
          f"nn.Linear({H}, {config['vocab_size']}) as linear, {params.dtype}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("to-gpurnn", help="a PyTorch state_dict to a libgpurnn checkpoint")
    a.add_argument("state_dict")
    a.add_argument("out")
    a.add_argument("--nonlinearity", choices=["tanh", "relu"], default="tanh",
                   help="the cell of a one-gate nn.RNN (its state_dict does not say) [tanh]")
    a.add_argument("--batch", type=int, default=1, help="the model's B (sequences side by side) [1]")
    a.add_argument("--max-seq-len", type=int, default=64, help="the model's largest T [64]")
    a.add_argument("--reduction", choices=["sum", "mean"], default="mean",
                   help="the loss reduction (PyTorch's cross_entropy default is mean) [mean]")
    a.add_argument("--dtype", choices=["f32", "f64"], help="[the state_dict's]")
    a.add_argument("--state", help="a torch.save'd dict {'h': (L, B, H)[, 'c': (L, B, H)]}: the carried state")
    a.add_argument("--rnn-prefix", help="key prefix of the recurrent module, e.g. 'rnn.' [found]")
    a.add_argument("--linear-prefix", help="key prefix of the output nn.Linear, e.g. 'linear.' [found]")
    b = sub.add_parser("to-torch", help="a libgpurnn checkpoint to a PyTorch state_dict")
    b.add_argument("checkpoint")
    b.add_argument("out")
    b.add_argument("--state", help="also write the carried state as {'h': (L, B, H)[, 'c': ...]} here")
    b.add_argument("--rnn-prefix", help="key prefix for the recurrent module ['rnn.']")
    b.add_argument("--linear-prefix", help="key prefix for the output layer ['linear.']")
    args = parser.parse_args(argv)
    if args.command == "to-gpurnn":
        if not 1 <= args.batch < 2 ** 31:
            parser.error(f"--batch {args.batch} must be in [1, 2^31 - 1]")
        if not 1 <= args.max_seq_len <= 2 ** 24:
            parser.error(f"--max-seq-len {args.max_seq_len} must be in [1, 2^24]")
    try:
        (to_gpurnn if args.command == "to-gpurnn" else to_torch)(args)
    except ConversionError as err:
        print(f"torch_checkpoint.py: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
