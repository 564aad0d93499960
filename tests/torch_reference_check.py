#!/usr/bin/env python3
"""PyTorch's nn.RNN / nn.GRU / nn.LSTM + nn.Linear in float64 on cases written by
tests/test_reference_cells.cc, as a second, independent oracle for tests/reference_cells.c.

    torch_reference_check.py CASES_IN RESULTS_OUT

CASES_IN holds whitespace-separated tokens: the number of cases, then per case
    cell L V H B T reduction        (cell: tanh relu gru lstm; reduction: sum mean)
    params N v_1 .. v_N             (flat, in libgpurnn's layout: DESIGN.md "Cells and layers")
    state N v_1 .. v_N              (h (L, B, H), then for LSTM c (L, B, H))
    inputs N t_1 .. t_N             (time-major (T, B) token ids)
    targets N t_1 .. t_N
RESULTS_OUT receives per case
    loss v
    state N v_1 .. v_N              (h_n, then for LSTM c_n)
    grads N v_1 .. v_N              (the same flat layout as params)
Every value is written with 17 significant digits, so it reads back exactly.
The layout is written out here a third time (besides src/layout.c and
tests/reference_cells.c), from DESIGN.md, and every count is checked against it.
"""
import sys

import torch
import torch.nn.functional as F

GATES = {"tanh": 1, "relu": 1, "gru": 3, "lstm": 4}


class Tokens:
    def __init__(self, text):
        self.items = text.split()
        self.pos = 0

    def word(self):
        self.pos += 1
        return self.items[self.pos - 1]

    def array(self, name, convert):
        label = self.word()
        if label != name:
            raise ValueError(f"expected '{name}', found '{label}'")
        n = int(self.word())
        values = [convert(v) for v in self.items[self.pos:self.pos + n]]
        if len(values) != n:
            raise ValueError(f"{name}: {n} values announced, {len(values)} present")
        self.pos += n
        return values


def layer_tensors(module, cell, L):
    """(W_ih_l, W_hh_l) for every layer, then the biases, in the flat layout's order."""
    weights = []
    for l in range(L):
        weights.append(getattr(module, f"weight_ih_l{l}"))
        weights.append(getattr(module, f"weight_hh_l{l}"))
    biases = [(getattr(module, f"bias_ih_l{l}"), getattr(module, f"bias_hh_l{l}")) for l in range(L)]
    return weights, biases


def run_case(tok):
    cell, L, V, H, B, T, reduction = tok.word(), int(tok.word()), int(tok.word()), int(tok.word()), \
        int(tok.word()), int(tok.word()), tok.word()
    G = GATES[cell]
    params = torch.tensor(tok.array("params", float), dtype=torch.float64)
    state = torch.tensor(tok.array("state", float), dtype=torch.float64)
    inputs = torch.tensor(tok.array("inputs", int), dtype=torch.int64)
    targets = torch.tensor(tok.array("targets", int), dtype=torch.int64)

    weight_count = G * H * (V + H) + (L - 1) * G * H * (H + H) + V * H
    bias_count = L * (H if G == 1 else 2 * G * H) + V
    if params.numel() != weight_count + bias_count:
        raise ValueError(f"{cell} L={L} V={V} H={H}: {params.numel()} params, expected {weight_count + bias_count}")
    state_count = (2 if cell == "lstm" else 1) * L * B * H
    if state.numel() != state_count or inputs.numel() != T * B or targets.numel() != T * B:
        raise ValueError("state, inputs or targets of the wrong size")

    if cell in ("tanh", "relu"):
        rnn = torch.nn.RNN(V, H, num_layers=L, nonlinearity=cell)
    elif cell == "gru":
        rnn = torch.nn.GRU(V, H, num_layers=L)
    else:
        rnn = torch.nn.LSTM(V, H, num_layers=L)
    rnn = rnn.double()
    out_layer = torch.nn.Linear(H, V).double()
    weights, biases = layer_tensors(rnn, cell, L)

    # Flat vector -> tensors. One-bias cells: our b_l is bias_ih_l + bias_hh_l, so b_l goes
    # to bias_ih_l and bias_hh_l is zero.
    pos = 0

    def take(n):
        nonlocal pos
        pos += n
        return params[pos - n:pos]

    with torch.no_grad():
        for w in weights:
            w.copy_(take(w.numel()).view_as(w))
        out_layer.weight.copy_(take(V * H).view(V, H))
        for b_ih, b_hh in biases:
            if G == 1:
                b_ih.copy_(take(H))
                b_hh.zero_()
            else:
                b_ih.copy_(take(G * H))
                b_hh.copy_(take(G * H))
        out_layer.bias.copy_(take(V))
    assert pos == params.numel()

    x = F.one_hot(inputs.view(T, B), V).double()  # (T, B, V)
    h0 = state[:L * B * H].view(L, B, H).clone()
    if cell == "lstm":
        c0 = state[L * B * H:].view(L, B, H).clone()
        hs, (h_n, c_n) = rnn(x, (h0, c0))
        state_out = torch.cat([h_n.reshape(-1), c_n.reshape(-1)])
    else:
        hs, h_n = rnn(x, h0)
        state_out = h_n.reshape(-1)
    logits = out_layer(hs)  # (T, B, V)
    loss = F.cross_entropy(logits.reshape(T * B, V), targets, reduction=reduction)
    loss.backward()

    grads = []
    for w in weights:
        grads.append(w.grad.reshape(-1))
    grads.append(out_layer.weight.grad.reshape(-1))
    for b_ih, b_hh in biases:
        grads.append(b_ih.grad.reshape(-1))  # for one-bias cells also the grad of b_l
        if G != 1:
            grads.append(b_hh.grad.reshape(-1))
    grads.append(out_layer.bias.grad.reshape(-1))
    grads = torch.cat(grads)
    assert grads.numel() == params.numel()
    return loss.item(), state_out.detach().tolist(), grads.tolist()


def fmt(values):
    return " ".join("%.17g" % v for v in values)


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: torch_reference_check.py CASES_IN RESULTS_OUT\n")
        return 2
    torch.set_num_threads(1)
    with open(sys.argv[1]) as f:
        tok = Tokens(f.read())
    lines = []
    for _ in range(int(tok.word())):
        loss, state, grads = run_case(tok)
        lines.append("loss %.17g" % loss)
        lines.append(f"state {len(state)} {fmt(state)}")
        lines.append(f"grads {len(grads)} {fmt(grads)}")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
