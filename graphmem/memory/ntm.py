"""The Neural Turing Machine (Graves et al. 2014), batched."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from graphmem import checks
from graphmem.errors import GraphmemError
from graphmem.memory import fused as fused_kernel
from graphmem.memory.controller import ControllerState, FeedForwardController, LSTMController
from graphmem.memory.heads import ReadHeads, WriteHeads

MEMORY_INITS: tuple[str, ...] = ("constant", "learned", "random")
CONTROLLERS: tuple[str, ...] = ("lstm", "feedforward")


class NTMState(NamedTuple):
    """Everything an NTM carries from one step to the next."""

    controller: ControllerState
    memory: Tensor  #: ``(B, N, M)``
    reads: Tensor  #: ``(B, K_r, A + M)`` last read vectors (``A = address_size``, 0 by default)
    read_weights: Tensor  #: ``(B, K_r, N)``
    write_weights: Tensor  #: ``(B, K_w, N)``
    usage: Tensor | None = None  #: ``(B, K_w, N)`` with ``lru_writes``, else ``None``


class NTMCell(nn.Module):
    r"""One step of a Neural Turing Machine.

    .. math::
        h_t = \mathrm{controller}([x_t \Vert r_{t-1}]), \quad
        M_t = \mathrm{write}(M_{t-1}, w^{w}_t, e_t, a_t), \quad
        r_t = \textstyle\sum_i w^{r}_t(i) M_t(i), \quad
        y_t = W_o [h_t \Vert r_t]

    where every weighting :math:`w_t` comes from the four addressing steps (content,
    interpolation, circular shift, sharpening) driven by :math:`h_t`. The write happens
    before the read, so a read at step ``t`` sees what was written at ``t``.

    Args:
        input_size: features per step of ``x``.
        output_size: features per step of ``y`` (logits; the copy task applies a sigmoid).
        memory_size: rows ``N``.
        memory_width: columns ``M``.
        controller: ``"lstm"`` or ``"feedforward"``.
        controller_size: controller width.
        controller_layers: controller depth.
        read_heads: ``K_r``.
        write_heads: ``K_w``.
        shift_range: ``R``, shifts ``-R .. R``.
        memory_init: ``"constant"`` (every cell ``init_value``; Collier & Beel 2018 found it
            converges fastest), ``"learned"`` (a learned ``N x M`` matrix) or ``"random"``
            (fresh :math:`\mathcal{N}(0, 1/M)` draws at every reset).
        init_value: the constant of ``memory_init="constant"``.
        clip: controller outputs are clipped to ``[-clip, clip]`` (``None`` to disable).
        score: the heads' content score, :math:`w^c_i = \mathrm{normalize}_i(\beta\, s(k, M(i)))`:
            a name of :data:`graphmem.attention.SCORES`, default the paper's ``"cosine"`` (see
            :class:`~graphmem.memory.heads.Head`).
        normalizer: the content normalizer: ``"softmax"`` (the paper's), ``"hard"``, ``"gumbel"``
            or ``"gumbel_hard"``; ``"none"`` is refused, location addressing needs a distribution.
        address_size: ``A``, the D-NTM's learned address vectors (Gulcehre et al. 2018): row
            ``i`` is :math:`[a_i \Vert M(i)]` with a learned :math:`a_i \in \mathbb{R}^A` that
            writes never change, so keys can find a row by where it is as well as by what it
            holds, and reads return it (read vectors are ``A + M`` wide); 0 (default) for the
            paper's NTM.
        lru_writes: least-recently-used writing: the write heads' content logits are penalised
            on the rows they wrote recently (see :class:`~graphmem.memory.heads.WriteHeads`).

    Shapes:
        - input: ``x`` :math:`(B, I)`, optional state (a fresh one when ``None``)
        - output: ``y`` :math:`(B, O)` and the new :class:`NTMState`
    """

    #: logit of row 0 in the initial weightings (softmax weight ~0.99 with 128 rows)
    INITIAL_FOCUS = 10.0

    def __init__(
        self,
        input_size: int,
        output_size: int,
        memory_size: int = 128,
        memory_width: int = 20,
        controller: str = "lstm",
        controller_size: int = 100,
        controller_layers: int = 1,
        read_heads: int = 1,
        write_heads: int = 1,
        shift_range: int = 1,
        memory_init: str = "constant",
        init_value: float = 1e-6,
        clip: float | None = 20.0,
        score: str = "cosine",
        normalizer: str = "softmax",
        address_size: int = 0,
        lru_writes: bool = False,
    ) -> None:
        super().__init__()
        if memory_init not in MEMORY_INITS:
            raise ValueError(f"unknown memory_init {memory_init!r}; choose one of {MEMORY_INITS}")
        if controller not in CONTROLLERS:
            raise ValueError(f"unknown controller {controller!r}; choose one of {CONTROLLERS}")
        if read_heads < 1 or write_heads < 0:
            raise ValueError(f"need read_heads >= 1 and write_heads >= 0, got {read_heads} and {write_heads}")
        if address_size < 0:
            raise ValueError(f"address_size must be >= 0, got {address_size}")
        if lru_writes and not write_heads:
            raise ValueError("lru_writes needs at least one write head")
        self.input_size = input_size
        self.output_size = output_size
        self.memory_size = memory_size
        self.memory_width = memory_width
        self.memory_init = memory_init
        self.init_value = init_value
        self.clip = clip
        self.address_size = address_size
        row_width = address_size + memory_width
        controller_cls = LSTMController if controller == "lstm" else FeedForwardController
        self.controller = controller_cls(input_size + read_heads * row_width, controller_size, controller_layers)
        self.read_heads = ReadHeads(controller_size, row_width, read_heads, shift_range, score, normalizer)
        self.write_heads = (WriteHeads(controller_size, memory_width, write_heads, shift_range, score, normalizer,
                                       key_width=row_width, lru=lru_writes) if write_heads else None)
        self.output = nn.Linear(controller_size + read_heads * row_width, output_size)
        self.initial_reads = nn.Parameter(torch.empty(read_heads, row_width))
        self.initial_read_logits = nn.Parameter(torch.empty(read_heads, memory_size))
        self.initial_write_logits = nn.Parameter(torch.empty(max(write_heads, 1), memory_size))
        if memory_init == "learned":
            self.initial_memory = nn.Parameter(torch.empty(memory_size, memory_width))
        else:
            self.register_parameter("initial_memory", None)
        if address_size:
            self.addresses = nn.Parameter(torch.empty(memory_size, address_size))
        else:
            self.register_parameter("addresses", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (self.controller, self.read_heads, self.write_heads, self.output):
            if module is not None:
                module.reset_parameters()
        nn.init.normal_(self.initial_reads, std=0.01)
        # Every head starts focused on row 0. A uniform start can never be undone: with a
        # constant memory all rows score alike, shifting and sharpening keep a uniform
        # weighting uniform, and the rows (and their gradients) stay identical forever.
        for logits in (self.initial_read_logits, self.initial_write_logits):
            nn.init.zeros_(logits)
            nn.init.constant_(logits[:, 0], self.INITIAL_FOCUS)
        if self.initial_memory is not None:
            bound = 1.0 / math.sqrt(self.memory_size + self.memory_width)
            nn.init.uniform_(self.initial_memory, -bound, bound)
        if self.addresses is not None:
            # distinct random directions, so every row is findable by its address from the start
            nn.init.normal_(self.addresses, std=1.0 / math.sqrt(self.address_size))

    def initial_state(self, batch_size: int, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> NTMState:
        """A fresh state for a new batch of sequences (the memory is reset)."""
        device = device or self.output.weight.device
        dtype = dtype or self.output.weight.dtype
        shape = (batch_size, self.memory_size, self.memory_width)
        if self.memory_init == "constant":
            memory = torch.full(shape, self.init_value, device=device, dtype=dtype)
        elif self.memory_init == "learned":
            memory = self.initial_memory.to(dtype).expand(shape)
        else:
            memory = torch.randn(shape, device=device, dtype=dtype) / math.sqrt(self.memory_width)
        num_writes = self.write_heads.num_heads if self.write_heads is not None else 1
        lru = self.write_heads is not None and self.write_heads.lru
        return NTMState(
            controller=self.controller.initial_state(batch_size, device, dtype),
            memory=memory,
            reads=self.initial_reads.expand(batch_size, -1, -1),
            read_weights=self.initial_read_logits.softmax(-1).expand(batch_size, -1, -1),
            write_weights=self.initial_write_logits[:num_writes].softmax(-1).expand(batch_size, -1, -1),
            usage=(torch.zeros(batch_size, num_writes, self.memory_size, device=device, dtype=dtype)
                   if lru else None),
        )

    def rows(self, memory: Tensor) -> Tensor:
        """What the heads address and read: ``memory`` ``(B, N, M)``, with the address vectors
        in front of it when ``address_size > 0`` (``(B, N, A + M)``)."""
        if self.addresses is None:
            return memory
        return torch.cat([self.addresses.to(memory.dtype).expand(memory.size(0), -1, -1), memory], -1)

    def check_input(self, x: Tensor, dim: int, owner: str = "NTMCell", layout: str = "(B, input_size)") -> None:
        """Refuses an ``x`` of the wrong rank or width with the user's numbers (shape checks
        only), and, while :mod:`graphmem.checks` are on, NaN or Inf values."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{owner} input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != dim:
            raise GraphmemError(f"{owner} input must have {dim} dimensions {layout}, got shape {tuple(x.shape)}")
        if x.size(-1) != self.input_size:
            raise GraphmemError(f"{owner} input has {x.size(-1)} features per step but the {owner} was built "
                                f"for input_size={self.input_size}")
        if x.size(-2) == 0 or (dim == 3 and x.size(0) == 0):
            raise GraphmemError(f"{owner} input is empty (shape {tuple(x.shape)}): it needs at least one "
                                "sequence and one step")
        if checks.enabled() and not self._input_checked:
            checks.check_features(x, "NTM input", dim=dim)

    #: set by :class:`NTM` while it steps through an input it has checked whole
    _input_checked = False

    def forward(self, x: Tensor, state: NTMState | None = None) -> tuple[Tensor, NTMState]:
        features, state = self.step(x, state)
        return self.output(features), state

    def step(self, x: Tensor, state: NTMState | None = None) -> tuple[Tensor, NTMState]:
        r"""One step up to the output layer: the features :math:`[h_t \Vert r_t]`,
        ``(B, controller_size + K_r M)``, and the new state.

        :class:`NTM` runs this at every step and applies the output layer :math:`W_o` to the
        features of all steps at once: one matmul per sequence rather than one per step.
        """
        # shape checks are static under torch.compile; the value check is skipped while tracing
        self.check_input(x, 2)
        if state is None:
            state = self.initial_state(x.size(0), x.device, x.dtype)
        hidden, controller_state = self.controller(torch.cat([x, state.reads.flatten(1)], -1), state.controller)
        if self.clip is not None:
            hidden = hidden.clamp(-self.clip, self.clip)
        memory, write_weights, usage = state.memory, state.write_weights, state.usage
        if self.write_heads is not None:
            memory, write_weights, usage = self.write_heads(hidden, memory, write_weights, self.rows(memory), usage)
        reads, read_weights = self.read_heads(hidden, self.rows(memory), state.read_weights)
        features = torch.cat([hidden, reads.flatten(1)], -1)
        return features, NTMState(controller_state, memory, reads, read_weights, write_weights, usage)

    def extra_repr(self) -> str:
        extra = f", address_size={self.address_size}" if self.address_size else ""
        return (f"input_size={self.input_size}, output_size={self.output_size}, "
                f"memory={self.memory_size}x{self.memory_width}, memory_init={self.memory_init!r}{extra}")


@functools.cache
def compiled_step(cell_type: type[NTMCell]) -> Callable[..., tuple[Tensor, NTMState]]:
    """``cell_type.step`` under :func:`torch.compile`, made once per class and called with the
    cell as its first argument.

    No model holds it, so a compiled :class:`NTM` deep-copies and pickles as an eager one
    does (a copy steps with its own parameters), and parameter names are those of the eager
    model.
    """
    return torch.compile(cell_type.step)


def _as_later_state(state: NTMState) -> NTMState:
    """``state`` in the form every step's output has: dense, and tracked by autograd while grad
    is on. A compiled step guards on strides and ``requires_grad``, so a fresh state (expanded
    parameters, constant zeros) would otherwise get a graph of its own for step 0, and one more
    for each of train, ``no_grad`` and ``inference_mode``, until dynamo's recompile limit is hit
    and the step falls back to eager."""
    track = torch.is_grad_enabled()

    def like_an_output(t: Tensor | None) -> Tensor | None:
        if t is None:  # the usage of an NTM without least-recently-used writes
            return None
        t = t.contiguous()
        return t.requires_grad_() if track and not t.requires_grad else t

    return torch.utils._pytree.tree_map(like_an_output, state)


class NTMHistory(NamedTuple):
    """Weightings of every step, for inspection and plots: ``(T, B, K, N)`` (batch first: ``(B, T, K, N)``)."""

    read_weights: Tensor
    write_weights: Tensor


class NTM(nn.Module):
    """A Neural Turing Machine over whole sequences: :class:`NTMCell` applied step by step.

    The state is reset at the start of every call unless one is passed in, so each batch of
    sequences starts from a fresh memory.

    Args:
        input_size: features per step.
        output_size: outputs per step.
        batch_first: inputs and outputs are ``(B, T, F)`` instead of ``(T, B, F)``.
        compile_step: compile the step (:meth:`NTMCell.step`) with :func:`torch.compile`. A
            step is about a hundred small operations, so on CPU the Python and dispatch
            overhead dominates and compiling makes training 2-3x faster, after a one-off
            compile of ~10-60 s per graph. The sequence length does not trigger recompiles,
            and the first step shares the others' graph; the second batch size seen recompiles
            once with the batch dimension dynamic, and ``no_grad`` and ``inference_mode`` get a
            graph each: a Lightning fit with validation and test compiles 4.
        fused: on CPU, run the whole sequence in one C++ loop with a hand-written backward
            through time (:mod:`graphmem.memory.fused`): the same maths, several times faster
            to train than ``compile_step`` at small batches, for the paper's content addressing
            (cosine score, softmax) with at least one write head. On other devices the step
            loop runs (compiled if ``compile_step``).
        **cell_options: any argument of :class:`NTMCell` (memory size, heads, controller, ...).

    Shapes:
        - input: :math:`(T, B, I)` (or :math:`(B, T, I)`)
        - output: :math:`(T, B, O)` (or :math:`(B, T, O)`), the final state, and with
          ``return_history=True`` an :class:`NTMHistory` of every step's weightings.
    """

    def __init__(self, input_size: int, output_size: int, batch_first: bool = False, compile_step: bool = False,
                 fused: bool = False, **cell_options) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.cell = NTMCell(input_size, output_size, **cell_options)
        self.compile_step = compile_step
        if fused and (reason := fused_kernel.unsupported(self.cell)) is not None:
            raise GraphmemError(f"NTM(fused=True) cannot run this NTM: {reason}; use fused=False "
                                "(compile_step=True is the fastest step loop)")
        self.fused = fused

    def reset_parameters(self) -> None:
        self.cell.reset_parameters()

    def forward(
        self, x: Tensor, state: NTMState | None = None, return_history: bool = False
    ) -> tuple[Tensor, NTMState] | tuple[Tensor, NTMState, NTMHistory]:
        # checked whole, outside the (possibly compiled) cell, so the step has no graph break
        layout = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
        self.cell.check_input(x, 3, owner="NTM", layout=layout)
        if self.batch_first:
            x = x.transpose(0, 1)
        use_kernel = self.fused and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
        if state is None:
            # made here rather than in the cell, so a compiled cell sees one kind of input
            state = self.cell.initial_state(x.size(1), x.device, x.dtype)
            if self.compile_step and not use_kernel:
                state = _as_later_state(state)
        if use_kernel:
            features, state, history = fused_kernel.run(self.cell, x, state)
        else:
            features, state, history = self._step_loop(x, state, return_history)
        if self.batch_first:
            features = features.transpose(0, 1)
        output = self.cell.output(features)
        if not return_history:
            return output, state
        if self.batch_first:
            history = NTMHistory(*(h.transpose(0, 1) for h in history))
        return output, state, history

    def _step_loop(self, x: Tensor, state: NTMState,
                   return_history: bool) -> tuple[Tensor, NTMState, NTMHistory | None]:
        """:meth:`NTMCell.step` at every step of ``x`` ``(T, B, I)`` (compiled if ``compile_step``):
        the features of every step ``(T, B, F)``, the final state and, if asked, the weightings."""
        outputs, reads, writes = [], [], []
        step = compiled_step(type(self.cell)) if self.compile_step else type(self.cell).step
        self.cell._input_checked = True
        try:
            for x_t in x.unbind(0):
                features, state = step(self.cell, x_t, state)
                outputs.append(features)
                if return_history:
                    reads.append(state.read_weights)
                    writes.append(state.write_weights)
        finally:
            self.cell._input_checked = False
        history = NTMHistory(torch.stack(reads), torch.stack(writes)) if return_history else None
        return torch.stack(outputs), state, history
