r"""The NTM over a whole sequence in one C++ loop, with a hand-written backward through time.

:class:`~graphmem.memory.NTM` with ``fused=True`` runs here on CPU. The maths is
:meth:`NTMCell.step`'s, step for step (``tests/test_ntm_fused.py`` checks outputs and every
gradient against it in double precision); what changes is where the time goes. A step of the
Python cell, even compiled, pays a fixed cost per time step (guards, the graph wrapper, an
autograd node, one gradient accumulation per parameter) and runs each pass over the
``B x N x M`` memory as its own small kernel. Here one C++ loop runs all steps, each batch
element's memory passes are a few loops over its ``N x M`` values, and each weight's gradient
is one matmul over all steps at once. The autograd graph has one node for the whole sequence.

The kernel is built from ``csrc/ntm_fused.cpp`` with :func:`torch.utils.cpp_extension.load` on
first use (about 40 s, then cached in ``TORCH_EXTENSIONS_DIR``, one build per CPU model): it
needs a C++ compiler, as ``torch.compile`` on CPU does, and ``ninja`` (a dependency).

It supports what the recipes use: an LSTM or feed-forward controller of any depth, any
number of read heads and at least one write head, shift range up to 31, the paper's cosine score
with softmax, any memory initialisation, float32 and float64.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from graphmem.errors import GraphmemError
from graphmem.memory.controller import LSTMController

if TYPE_CHECKING:
    from graphmem.memory.ntm import NTMCell, NTMHistory, NTMState

SOURCE = Path(__file__).with_name("csrc") / "ntm_fused.cpp"
#: reassociation lets the compiler vectorise the sums over memory rows; not -ffast-math, whose
#: other parts (no NaN or Inf, flushing subnormals) would change results
CFLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros", "-fassociative-math"]
#: on x86-64 the kernel is built for the CPU it runs on (as inductor builds its kernels), about
#: 10% faster than the baseline x86-64 build; the cache is then per CPU (:func:`cpu_tag`)
NATIVE = ["-march=native"] if platform.machine().lower() in ("x86_64", "amd64") else []


def cpu_tag() -> str:
    """A digest of this CPU's model and instruction sets, part of the kernel's cache name, so that
    a build for one CPU is never loaded on another (a home folder shared by several machines)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        fields = [line for line in lines if line.startswith(("model name", "flags"))][:2]
    except OSError:
        fields = [platform.processor(), platform.machine()]
    return hashlib.sha1("\n".join(fields).encode()).hexdigest()[:10]


@functools.cache
def extension() -> ModuleType:
    """The compiled kernel (built on first call, then loaded from torch's extension cache)."""
    from torch.utils import cpp_extension

    try:
        return cpp_extension.load(name=f"graphmem_ntm_fused_{cpu_tag()}", sources=[str(SOURCE)],
                                  extra_cflags=CFLAGS + NATIVE, verbose=False)
    except (RuntimeError, OSError, subprocess.CalledProcessError, ImportError) as error:
        # the compiler's log is long: its end names the problem, the whole of it stays in the chain
        reason = "\n".join(str(error).strip().splitlines()[-12:])
        raise GraphmemError(
            f"NTM(fused=True) could not build its C++ kernel. It needs a C++ compiler (g++ or clang, as "
            f"torch.compile on CPU does) and ninja (pip install ninja); or use NTM(compile_step=True), the same "
            f"model stepped in Python. The build said:\n{reason}") from error


def unsupported(cell: NTMCell) -> str | None:
    """Why ``cell`` cannot run fused, or ``None`` when it can."""
    if cell.write_heads is None:
        return "it needs at least one write head"
    if cell.address_size or cell.write_heads.lru:
        return "it implements the paper's NTM, not the D-NTM's address vectors or least-recently-used writes"
    if cell.clip is not None and cell.clip <= 0:
        return f"clip {cell.clip} is not positive (None turns clipping off)"
    for heads in (cell.read_heads, cell.write_heads):
        if heads.score != "cosine" or heads.normalizer != "softmax":
            return (f"it implements the paper's content addressing (score 'cosine', normalizer 'softmax'), "
                    f"not score {heads.score!r} with normalizer {heads.normalizer!r}")
        if heads.shift_range > 31:
            return f"shift_range {heads.shift_range} is above its limit of 31"
    return None


def controller_weights(cell: NTMCell) -> list[Tensor]:
    """Per layer: an LSTM cell's ``weight_ih, weight_hh, bias_ih, bias_hh``, a linear layer's ``weight, bias``."""
    if isinstance(cell.controller, LSTMController):
        return [w for c in cell.controller.cells for w in (c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh)]
    return [w for layer in cell.controller.net if isinstance(layer, torch.nn.Linear) for w in (layer.weight, layer.bias)]


class _Sequence(torch.autograd.Function):
    """All steps of an NTM: the C++ forward, and its backward through time."""

    @staticmethod
    def forward(ctx, options: tuple[bool, int, float, int], x: Tensor, r0: Tensor, wr0: Tensor, ww0: Tensor,
                mem0: Tensor, h0: Tensor, c0: Tensor, read_w: Tensor, read_b: Tensor, write_w: Tensor,
                write_b: Tensor, *controller: Tensor) -> tuple[Tensor, ...]:
        lstm, shift_range, clip, _ = options
        saved = extension().forward(x, r0, wr0, ww0, mem0, h0, c0, list(controller), read_w, read_b, write_w,
                                    write_b, lstm, shift_range, clip)
        features, mems, wr, ww, hs, cs = saved[:6]
        ctx.options = options
        ctx.save_for_backward(*saved[1:], wr0, ww0, h0, c0, read_w, write_w, *controller)
        ctx.mark_non_differentiable(wr, ww)
        batch, hidden = x.size(1), h0.size(-1)
        reads = features[-1, :, hidden:].reshape(batch, r0.size(1), r0.size(2))
        h_final = hs[-1] if lstm else h0
        c_final = cs[-1] if lstm else c0
        # the final state as tensors of its own (not views of saved buffers), each with a gradient
        final = (reads, wr[-1], ww[-1], h_final, c_final)
        # the kernel keeps the memory transposed, (B, M, N)
        return (features, mems[-1].transpose(1, 2).contiguous(), *(t.clone() for t in final), wr, ww)

    @staticmethod
    def backward(ctx, dfeatures: Tensor, dmem: Tensor, dreads: Tensor, dwr: Tensor, dww: Tensor, dh: Tensor,
                 dc: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:
        # autograd hands zeros for the outputs the loss does not use (materialize_grads)
        lstm, shift_range, clip, input_size = ctx.options
        tensors = ctx.saved_tensors
        saved, (wr0, ww0, h0, c0, read_w, write_w), controller = tensors[:13], tensors[13:19], tensors[19:]
        grads = extension().backward(
            dfeatures.contiguous(), dmem.contiguous(), dreads.contiguous(), dwr.contiguous(), dww.contiguous(),
            dh.contiguous(), dc.contiguous(), list(saved), wr0, ww0, h0, c0, list(controller), read_w, write_w,
            lstm, shift_range, clip, input_size)
        dx, dr0, dwr0, dww0, dmem0, dh0, dc0, dread_w, dread_b, dwrite_w, dwrite_b, *dcontroller = grads
        if not lstm:
            dh0 = dc0 = None
        return (None, dx, dr0, dwr0, dww0, dmem0, dh0, dc0, dread_w, dread_b, dwrite_w, dwrite_b, *dcontroller)


def run(cell: NTMCell, x: Tensor, state: NTMState) -> tuple[Tensor, NTMState, NTMHistory]:
    """All steps of ``cell`` on ``x`` ``(T, B, I)`` from ``state``: the features
    :math:`[h_t \\Vert r_t]` of every step ``(T, B, controller_size + K_r M)``, the final
    state and the weightings of every step."""
    from graphmem.memory.ntm import NTMHistory, NTMState

    lstm = isinstance(cell.controller, LSTMController)
    batch, hidden = x.size(1), cell.controller.hidden_size
    if lstm:
        h0, c0 = (s.contiguous() for s in state.controller)
    else:  # shapes only: a feed-forward controller keeps no state
        h0 = x.new_zeros(len(cell.controller.net) // 2, batch, hidden)
        c0 = x.new_zeros(0)
    options = (lstm, cell.read_heads.shift_range, float(cell.clip or 0.0), cell.input_size)
    read_linear, write_linear = cell.read_heads.linear, cell.write_heads.linear
    features, memory, reads, wr_last, ww_last, h, c, wr, ww = _Sequence.apply(
        options, x.contiguous(), state.reads.contiguous(), state.read_weights.contiguous(),
        state.write_weights.contiguous(), state.memory.contiguous(), h0, c0, read_linear.weight, read_linear.bias,
        write_linear.weight, write_linear.bias, *controller_weights(cell))
    final = NTMState((h, c) if lstm else (), memory, reads, wr_last, ww_last)
    return features, final, NTMHistory(wr, ww)
