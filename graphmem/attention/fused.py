r"""Fused sparse read: attention-weighted neighbour sums that never build per-edge messages.

:func:`~graphmem.attention.sparse_read` forms one message :math:`\alpha_{eh} v_{s(e)h}` per
edge, head and channel, an ``E x H x C`` tensor (about 0.5 GB for a million edges with
8 heads of 16 channels) that autograd keeps for the backward pass. The read is a sparse
matrix times a dense one, so it can be computed without it:

.. math::
    r_{\cdot h} = A_h\, v_{\cdot h}, \qquad (A_h)_{t(e), s(e)} = \alpha_{eh},

with :math:`A_h` in CSR form (edges sorted by target). Its gradients are two more sparse
products, again without ``E x H x C`` intermediates:

.. math::
    \frac{\partial L}{\partial v_{\cdot h}} = A_h^\top g_{\cdot h}
    \quad\text{(SpMM with the transpose, edges sorted by source)},\qquad
    \frac{\partial L}{\partial \alpha_{eh}} = \langle g_{t(e)h},\, v_{s(e)h} \rangle
    \quad\text{(SDDMM)},

where :math:`g = \partial L / \partial r`. The heads become one block-diagonal matrix of
``H * N_q`` rows, so each product is a single call of PyTorch's sparse kernels (MKL on CPU,
cuSPARSE on CUDA).

No kernel here uses atomics, and no order of summation depends on scheduling: the sort is
stable, each output row of an SpMM is summed in a fixed order, and each SDDMM entry is a
dot product of its own. Results are therefore reproducible to the bit from run to run
(tested on CPU; on CUDA this rests on cuSPARSE's non-transposed CSR SpMM and its SDDMM).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

_INT32_MAX = 2**31 - 1


def _sort_rows(key: Tensor, num_rows: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted ``key`` ``(E,)``, the edge order that sorts it, and CSR row pointers
    ``(num_rows + 1,)`` in the key's dtype."""
    # A stable sort keeps each row's edges in input order, so the summation order (and the
    # result, to the last bit) is the same on every run. searchsorted needs no device sync,
    # unlike bincount.
    sorted_key, order = torch.sort(key, stable=True)
    rows = torch.arange(num_rows + 1, dtype=key.dtype, device=key.device)
    rowptr = torch.searchsorted(sorted_key, rows, out_int32=key.dtype == torch.int32)
    return sorted_key, order, rowptr


def _block_diagonal(rowptr: Tensor, col: Tensor, heads: int, num_cols: int) -> tuple[Tensor, Tensor]:
    r"""CSR indices of ``heads`` copies of one pattern laid out as a block-diagonal matrix.

    ``rowptr`` ``(R + 1,)`` and ``col`` ``(E,)`` describe an ``R x num_cols`` pattern; the
    result, ``crow`` ``(H R + 1,)`` and ``col`` ``(H E,)``, describes the
    ``(H R, H num_cols)`` matrix whose block ``h`` is head ``h``. With values ``(H, E)`` and
    the head-major dense operand ``(H num_cols, C)``, one sparse product serves every head.
    """
    num_edges, num_rows = col.numel(), rowptr.numel() - 1
    head = torch.arange(heads, dtype=col.dtype, device=col.device).unsqueeze(1)
    crow = rowptr.new_empty(heads * num_rows + 1)
    torch.add(rowptr[:-1], head * num_edges, out=crow[:-1].view(heads, num_rows))
    crow[-1] = heads * num_edges
    return crow, (col.unsqueeze(0) + head * num_cols).reshape(-1)


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A CSR matrix from trusted indices (no invariant checks, no beta-state warning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values.reshape(-1), shape, check_invariants=False)


def _spmm(sparse: Tensor, dense: Tensor) -> Tensor:
    """``sparse @ dense`` into fresh memory: with ``beta=0`` and ``out=`` PyTorch neither
    zero-fills nor copies the result, two full passes over the output saved."""
    out = dense.new_empty(sparse.size(0), dense.size(1))
    return torch.addmm(out, sparse, dense, beta=0.0, out=out)


def _head_major(x: Tensor) -> Tensor:
    """``(N, H, C)`` as the contiguous ``(H N, C)`` operand of a block-diagonal product."""
    return x.transpose(0, 1).reshape(-1, x.size(-1))


def _node_major(x: Tensor, heads: int) -> Tensor:
    """Inverse of :func:`_head_major`: ``(H N, C)`` back to a contiguous ``(N, H, C)``."""
    return x.view(heads, -1, x.size(-1)).transpose(0, 1).contiguous()


class _FusedSparseRead(torch.autograd.Function):
    """``r = A v`` with ``A`` built from edge weights; see the module docstring."""

    @staticmethod
    def forward(ctx: FunctionCtx, weights: Tensor, value: Tensor, edge_index: Tensor,
                num_queries: int) -> Tensor:
        (num_edges, heads), (num_keys, channels) = weights.shape, (value.size(0), value.size(2))
        ctx.num_queries = num_queries
        if num_edges == 0:  # sparse kernels may reject a matrix without entries
            ctx.save_for_backward(weights, value)
            return value.new_zeros(num_queries, heads, channels)
        fits_int32 = heads * max(num_edges, num_keys, num_queries) <= _INT32_MAX
        index_dtype = torch.int32 if fits_int32 else torch.int64
        source, target = edge_index.to(index_dtype)
        sorted_target, order, rowptr = _sort_rows(target, num_queries)
        crow, col = _block_diagonal(rowptr, source.index_select(0, order), heads, num_keys)
        values = weights.t().index_select(1, order)  # (H, E): row h holds head h's CSR values
        value_hm = _head_major(value)
        shape = (heads * num_queries, heads * num_keys)
        adjacency = _csr(crow, col, values, shape)
        ctx.save_for_backward(order, sorted_target, crow, col, values, value_hm)
        return _node_major(_spmm(adjacency, value_hm), heads)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        if len(ctx.saved_tensors) == 2:  # no edges: nothing was read
            weights, value = ctx.saved_tensors
            return torch.zeros_like(weights), torch.zeros_like(value), None, None
        order, sorted_target, crow, col, values, value_hm = ctx.saved_tensors
        num_queries, (heads, num_edges) = ctx.num_queries, values.shape
        num_keys = value_hm.size(0) // heads
        shape = (heads * num_queries, heads * num_keys)
        grad_hm = _head_major(grad_out)
        grad_weights = grad_value = None
        if ctx.needs_input_grad[0]:
            # SDDMM: <g[t(e), h], v[s(e), h]> on A's pattern, one dot product per entry, written
            # in place (out=) into zeros: a separate output would copy A's indices first.
            products = _csr(crow, col, values.new_zeros(values.shape), shape)
            torch.sparse.sampled_addmm(products, grad_hm, value_hm.t(), beta=0.0, out=products)
            grad_weights = grad_out.new_empty(num_edges, heads)
            grad_weights.index_copy_(0, order, products.values().view(heads, -1).t())
        if ctx.needs_input_grad[1]:
            # A^T as a CSR matrix of its own (rows = sources): a transposed product would
            # convert formats or, on CUDA, accumulate with atomics. Sorting A's entries by
            # column gives its pattern and the order of its values directly.
            _, order_t, rowptr_t = _sort_rows(col[:num_edges], num_keys)  # head 0's block: no offset
            crow_t, col_t = _block_diagonal(rowptr_t, sorted_target.index_select(0, order_t), heads,
                                            num_queries)
            adjacency_t = _csr(crow_t, col_t, values.index_select(1, order_t), shape[::-1])
            grad_value = _node_major(_spmm(adjacency_t, grad_hm), heads)
        return grad_weights, grad_value, None, None


_NATIVE_DTYPES = (torch.float32, torch.float64)


@torch.compiler.disable
def sparse_read_fused(weights: Tensor, value: Tensor, edge_index: Tensor, num_queries: int) -> Tensor:
    r"""Weighted sum over each target's in-edges, :math:`r_i = \sum_{(j, i) \in E} \alpha_{ji} v_j`,
    without per-edge messages.

    Same arguments and shapes (``weights`` ``(E, *)``, ``value`` ``(N_k, *, D_v)``, result
    ``(num_queries, *, D_v)``), result and gradients as :func:`~graphmem.attention.sparse_read`
    (up to float rounding), at a memory cost of ``O(E H)`` instead of ``O(E H C)``: the forward
    is a CSR sparse-dense product, the backward a transposed one and an SDDMM (module
    docstring). Bitwise reproducible from run to run (no atomics). Half and bfloat16 inputs
    are computed in float32 and the result cast back. Not twice differentiable.
    """
    shared = tuple(weights.shape[1:])
    if tuple(value.shape[1:-1]) != shared:
        raise ValueError(f"weights {tuple(weights.shape)} and value {tuple(value.shape)} must share "
                         "the dimensions between the first and the last")
    out_shape = (num_queries,) + shared + (value.size(-1),)
    dtype = torch.promote_types(weights.dtype, value.dtype)
    compute = dtype if dtype in _NATIVE_DTYPES else torch.float32
    heads = math.prod(shared)
    out = _FusedSparseRead.apply(
        weights.reshape(weights.size(0), heads).to(compute),
        value.reshape(value.size(0), heads, value.size(-1)).to(compute),
        edge_index,
        num_queries,
    )
    return out.view(out_shape).to(dtype)
