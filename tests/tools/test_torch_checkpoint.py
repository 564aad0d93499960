#!/usr/bin/env python3
"""tools/torch_checkpoint.py against PyTorch and libgpurnn itself.

    test_torch_checkpoint.py LIBGPURNN.so CONVERTER.py WORK_DIR

For every cell (tanh, ReLU, GRU, LSTM) and L in {1, 2}, in float64: a PyTorch
nn.RNN/GRU/LSTM + nn.Linear with its own random weights, biases and (h0, c0) is
converted to a checkpoint, which libgpurnn loads (through ctypes, as any C caller
would); libgpurnn's loss, final state and gradients must agree with PyTorch's to
1e-12. The checkpoint converted back must give PyTorch the same tensors (bit for bit;
for tanh/ReLU the one bias comes back as bias_ih with bias_hh = 0) and the same loss.
Float32 round trips bit for bit; bad state_dicts are refused with a message naming the
key. Exit status 77 (ctest: skipped) with the reason when torch cannot be imported.
"""
import ctypes
import os
import subprocess
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError as err:
    print(f"skipped: PyTorch is not importable by {sys.executable} ({err})")
    sys.exit(77)

LIB, CONVERTER, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.dirname(CONVERTER))
import torch_checkpoint as tc  # noqa: E402

GPURNN_BACKEND_CPU = 1
lib = ctypes.CDLL(LIB)
lib.gpurnn_last_error.restype = ctypes.c_char_p
lib.gpurnn_param_count.restype = ctypes.c_size_t
lib.gpurnn_state_count.restype = ctypes.c_size_t
for name in ("gpurnn_param_count", "gpurnn_state_count", "gpurnn_model_destroy", "gpurnn_backward"):
    getattr(lib, name).argtypes = [ctypes.c_void_p]
lib.gpurnn_model_load.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]
lib.gpurnn_forward.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int32),
                               ctypes.c_int, ctypes.POINTER(ctypes.c_double)]
for name in ("gpurnn_params_get", "gpurnn_grads_get", "gpurnn_state_get"):
    getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_double), ctypes.c_size_t]

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print(f"FAIL: {what}")


def call(status, what):
    if status != 0:
        raise RuntimeError(f"{what}: status {status}: {lib.gpurnn_last_error().decode()}")


def convert(*args, expect=0):
    r = subprocess.run([sys.executable, CONVERTER, *args], capture_output=True, text=True)
    if r.returncode != expect:
        raise RuntimeError(f"torch_checkpoint.py {' '.join(args)}: exit {r.returncode}, expected {expect}\n"
                           f"{r.stdout}{r.stderr}")
    return r.stdout + r.stderr


class Model(torch.nn.Module):
    def __init__(self, cell, V, H, L, dtype):
        super().__init__()
        if cell in ("tanh", "relu"):
            self.rnn = torch.nn.RNN(V, H, num_layers=L, nonlinearity=cell)
        elif cell == "gru":
            self.rnn = torch.nn.GRU(V, H, num_layers=L)
        else:
            self.rnn = torch.nn.LSTM(V, H, num_layers=L)
        self.linear = torch.nn.Linear(H, V)
        self.to(dtype)

    def loss(self, x, y, state, V):
        out, final = self.rnn(F.one_hot(x, V).to(self.linear.weight.dtype), state)
        logits = self.linear(out)
        return F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), reduction="sum"), final


def gpurnn_run(path, x, y, T):
    m = ctypes.c_void_p()
    call(lib.gpurnn_model_load(path.encode(), GPURNN_BACKEND_CPU, ctypes.byref(m)), "gpurnn_model_load")
    try:
        xs = (ctypes.c_int32 * x.numel())(*x.reshape(-1).tolist())
        ys = (ctypes.c_int32 * y.numel())(*y.reshape(-1).tolist())
        loss = ctypes.c_double()
        call(lib.gpurnn_forward(m, xs, ys, T, ctypes.byref(loss)), "gpurnn_forward")
        call(lib.gpurnn_backward(m), "gpurnn_backward")
        P, S = lib.gpurnn_param_count(m), lib.gpurnn_state_count(m)
        grads, state, params = (ctypes.c_double * P)(), (ctypes.c_double * S)(), (ctypes.c_double * P)()
        call(lib.gpurnn_grads_get(m, grads, P), "gpurnn_grads_get")
        call(lib.gpurnn_state_get(m, state, S), "gpurnn_state_get")
        call(lib.gpurnn_params_get(m, params, P), "gpurnn_params_get")
        as_tensor = lambda a: torch.tensor(list(a), dtype=torch.float64)
        return loss.value, as_tensor(params), as_tensor(grads), as_tensor(state)
    finally:
        lib.gpurnn_model_destroy(m)


def max_scaled_error(a, b):
    return float(((a - b).abs() / b.abs().clamp(min=1)).max()) if a.numel() else 0.0


def one_case(cell, L, V=7, H=5, B=3, T=6, seed=0):
    label = f"{cell} L={L}"
    torch.manual_seed(seed)
    model = Model(cell, V, H, L, torch.float64)
    with torch.no_grad():  # biases away from PyTorch's default so that none is trivial
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randint(0, V, (T, B))
    y = torch.randint(0, V, (T, B))
    h0 = torch.randn(L, B, H, dtype=torch.float64) * 0.5
    c0 = torch.randn(L, B, H, dtype=torch.float64) * 0.5
    state = (h0, c0) if cell == "lstm" else h0
    loss, final = model.loss(x, y, state, V)
    model.zero_grad()
    loss.backward()

    sd_path, ckpt, back, st_path, st_back = (os.path.join(WORK, f"{cell}{L}.{ext}")
                                             for ext in ("pt", "ckpt", "back.pt", "state.pt", "state.back.pt"))
    torch.save(model.state_dict(), sd_path)
    torch.save({"h": h0, "c": c0} if cell == "lstm" else {"h": h0}, st_path)
    convert("to-gpurnn", sd_path, ckpt, "--nonlinearity", "relu" if cell == "relu" else "tanh",
            "--batch", str(B), "--max-seq-len", str(T), "--reduction", "sum", "--state", st_path)

    got_loss, got_params, got_grads, got_state = gpurnn_run(ckpt, x, y, T)
    check(abs(got_loss - loss.item()) <= 1e-12 * max(1.0, abs(loss.item())),
          f"{label}: loss {got_loss!r} vs PyTorch {loss.item()!r}")
    want_state = torch.cat([final[0].reshape(-1), final[1].reshape(-1)]) if cell == "lstm" else final.reshape(-1)
    check(max_scaled_error(got_state, want_state.detach()) <= 1e-12, f"{label}: final state")
    # PyTorch's gradients in libgpurnn's layout: for tanh/ReLU d/db = d/dbias_ih (= d/dbias_hh)
    grad_sd = {k: p.grad for k, p in model.named_parameters()}
    if cell in ("tanh", "relu"):
        grad_sd = {k: (torch.zeros_like(g) if "bias_hh" in k else g) for k, g in grad_sd.items()}
    _, _, _, _, grad_tensors = tc.read_state_dict(grad_sd, "relu" if cell == "relu" else "tanh")
    want_grads = tc.flatten(cell, L, V, H, grad_tensors, torch.float64)
    check(max_scaled_error(got_grads, want_grads) <= 1e-12,
          f"{label}: gradients differ by {max_scaled_error(got_grads, want_grads):.3g}")
    _, _, _, _, param_tensors = tc.read_state_dict(model.state_dict(), "relu" if cell == "relu" else "tanh")
    check(torch.equal(got_params, tc.flatten(cell, L, V, H, param_tensors, torch.float64)),
          f"{label}: parameters not bit-identical after loading")

    # back to PyTorch
    out = convert("to-torch", ckpt, back, "--state", st_back)
    check(("nonlinearity='relu'" in out) == (cell == "relu"), f"{label}: to-torch names the module: {out}")
    sd = torch.load(back, weights_only=True)
    original = model.state_dict()
    check(sorted(sd) == sorted(original), f"{label}: keys {sorted(sd)}")
    for k, v in original.items():
        if cell in ("tanh", "relu") and "bias_ih" in k:
            want = v + original[k.replace("bias_ih", "bias_hh")]
        elif cell in ("tanh", "relu") and "bias_hh" in k:
            want = torch.zeros_like(v)
        else:
            want = v
        check(sd[k].dtype == v.dtype and torch.equal(sd[k], want), f"{label}: {k} after the round trip")
    restored = Model(cell, V, H, L, torch.float64)
    restored.load_state_dict(sd)
    st = torch.load(st_back, weights_only=True)
    check(torch.equal(st["h"], h0) and (cell != "lstm" or torch.equal(st["c"], c0)), f"{label}: state round trip")
    again, _ = restored.loss(x, y, (st["h"], st["c"]) if cell == "lstm" else st["h"], V)
    check(abs(again.item() - loss.item()) <= 1e-12 * loss.item(), f"{label}: loss after the round trip")


def float32_round_trip():
    torch.manual_seed(5)
    model = Model("gru", 6, 4, 2, torch.float32)
    sd_path, ckpt, back = (os.path.join(WORK, f"f32.{ext}") for ext in ("pt", "ckpt", "back.pt"))
    torch.save(model.state_dict(), sd_path)
    convert("to-gpurnn", sd_path, ckpt, "--batch", "2")
    convert("to-torch", ckpt, back)
    sd = torch.load(back, weights_only=True)
    for k, v in model.state_dict().items():
        check(sd[k].dtype == torch.float32 and torch.equal(sd[k], v), f"float32: {k} not bit-identical")
    config, params, state = tc.read_checkpoint(ckpt)
    check(config["cell"] == "gru" and config["num_layers"] == 2 and config["batch_size"] == 2
          and config["reduction"] == "mean", f"float32: header {config}")
    check(params.dtype == torch.float32 and bool((state == 0).all()) and state.numel() == 2 * 2 * 4,
          "float32: dtype or zero state")


def refusals():
    bad = os.path.join(WORK, "bad.pt")
    out_path = os.path.join(WORK, "never.ckpt")
    torch.save(Model("lstm", 5, 3, 1, torch.float64).state_dict() | {"rnn.weight_ih_l0_reverse": torch.zeros(12, 5)},
               bad)
    msg = convert("to-gpurnn", bad, out_path, expect=1)
    check("rnn.weight_ih_l0_reverse" in msg and not os.path.exists(out_path), f"bidirectional refused: {msg}")
    sd = Model("gru", 5, 3, 2, torch.float64).state_dict()
    sd["rnn.weight_hh_l1"] = torch.zeros(9, 4, dtype=torch.float64)
    torch.save(sd, bad)
    msg = convert("to-gpurnn", bad, out_path, expect=1)
    check("rnn.weight_hh_l1" in msg and "(9, 4)" in msg and not os.path.exists(out_path), f"bad shape: {msg}")
    # a damaged checkpoint is refused, not converted
    good = os.path.join(WORK, "gru2.ckpt")
    data = bytearray(open(good, "rb").read())
    data[200] ^= 1
    damaged = os.path.join(WORK, "damaged.ckpt")
    open(damaged, "wb").write(data)
    msg = convert("to-torch", damaged, os.path.join(WORK, "never.pt"), expect=1)
    check("checksum" in msg, f"damaged checkpoint: {msg}")
    check(tc.crc64_xz(b"123456789") == 0x995DC9BBDF1939FA, "CRC-64/XZ check value")


def main():
    os.makedirs(WORK, exist_ok=True)
    torch.set_num_threads(1)
    for cell in ("tanh", "relu", "gru", "lstm"):
        for L in (1, 2):
            one_case(cell, L, seed=10 * L + len(cell))
    float32_round_trip()
    refusals()
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all checks passed: 4 cells x L in {1, 2} against PyTorch, float32 round trip, refusals")
    return 0


if __name__ == "__main__":
    sys.exit(main())
