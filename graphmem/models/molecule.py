"""A GAT for molecular property prediction on OGB-featurised molecule graphs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from ogb.graphproppred.mol_encoder import AtomEncoder, BondEncoder
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

from graphmem.errors import GraphmemError
from graphmem.nn import GATConv, HopfieldPooling

READOUTS = ("mean", "sum", "max", "mean+max")
# readouts with learned parameters, built as modules inside the model
MODULE_READOUTS = ("hopfield",)
DESCRIPTOR_FUSIONS = ("concat", "mean")
DESCRIPTOR_CLAMP = 5.0  # standard deviations
# the submodules that make node states: what pretraining trains and fine-tuning starts from
ENCODER = ("atom_encoder", "bond_encoders", "convs", "norms", "virtual_node", "virtual_mlps")


class SafeBatchNorm1d(nn.BatchNorm1d):
    """:class:`torch.nn.BatchNorm1d` that also trains on a batch of one row (a last batch of one
    molecule, or of one atom): one row has no batch statistics, so it is normalised with the
    running ones, as in evaluation, and they are left unchanged. Same parameters and state_dict."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.size(0) == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def mean_probability_logits(a: Tensor, b: Tensor) -> Tensor:
    r"""The logits of :math:`\tfrac12(\sigma(a) + \sigma(b))`, computed in log space so that
    confident logits of either sign stay finite:
    :math:`\log p - \log(1 - p)` with :math:`\log p = \mathrm{logaddexp}(\log\sigma(a), \log\sigma(b)) - \log 2`
    and likewise :math:`\log(1 - p)` from :math:`\sigma(-a), \sigma(-b)`; the two :math:`\log 2` cancel."""
    log_p = torch.logaddexp(F.logsigmoid(a), F.logsigmoid(b))
    log_q = torch.logaddexp(F.logsigmoid(-a), F.logsigmoid(-b))
    return log_p - log_q


def graph_readout(x: Tensor, batch: Tensor, kind: str, num_graphs: int) -> Tensor:
    """Pools node states ``(N, F)`` into graph states ``(G, F)`` (``(G, 2F)`` for ``mean+max``)."""
    if kind == "mean":
        return global_mean_pool(x, batch, num_graphs)
    if kind == "sum":
        return global_add_pool(x, batch, num_graphs)
    if kind == "max":
        return global_max_pool(x, batch, num_graphs)
    if kind == "mean+max":
        return torch.cat([global_mean_pool(x, batch, num_graphs), global_max_pool(x, batch, num_graphs)], -1)
    raise ValueError(f"unknown readout {kind!r}; choose one of {READOUTS}")


class MoleculeGAT(nn.Module):
    r"""Atom embedding, ``num_layers`` residual GAT layers with bond features, graph readout, MLP head.

    .. math::
        h^{(0)} = \mathrm{AtomEncoder}(x), \quad
        h^{(l+1)} = h^{(l)} + \mathrm{Dropout}(\mathrm{ELU}(\mathrm{BN}(
            \mathrm{GAT}^{(l)}(h^{(l)}, E, \mathrm{BondEncoder}^{(l)}(e))))), \quad
        \hat y = \mathrm{MLP}(\mathrm{readout}(h^{(L)}) \Vert \bar d), \quad
        \bar d = \mathrm{clamp}(\mathrm{BN}(d), -5, 5)

    or, with ``descriptor_fusion="mean"``, two predictors whose probabilities are averaged,
    the graph's and a descriptor MLP's: a two-member ensemble of different kinds in one model.
    Each member is trained on its own loss (:meth:`member_logits`, which
    :class:`~graphmem.lit.GraphPropertyTask` trains on), so the two stay as different as two
    models trained apart; trained on the average instead, each learns only what the other
    misses, and validation fell from 0.856 to 0.847 on Tox21. The logits returned are those of
    the average:

    .. math::
        \sigma(\hat y) = \tfrac12\,\sigma\big(\mathrm{MLP}(\mathrm{readout}(h^{(L)}))\big)
            + \tfrac12\,\sigma\big(\mathrm{MLP}_d(\bar d)\big)

    With ``virtual_node`` (Gilmer et al. 2017, as in OGB's GNNs), every molecule has one more
    node ``v`` linked to all its atoms: each layer reads ``h^{(l)} + v^{(l)}`` and, between
    layers, ``v^{(l+1)} = v^{(l)} + \mathrm{MLP}_v(\sum_{i \in G} (h^{(l)}_i + v^{(l)}) + v^{(l)})``
    from a learned ``v^{(0)}`` (zeros at the start), so atoms that no path of bonds joins (salts,
    mixtures) still exchange information within their molecule. The molecule's descriptors
    ``d`` enter only with ``descriptor_size``.

    Hidden layers concatenate ``heads`` heads of ``hidden_channels // heads`` channels; the
    last layer averages ``heads`` heads of ``hidden_channels`` channels (as in the GAT paper).

    Args:
        num_tasks: outputs (one logit per task).
        hidden_channels: node state width.
        heads: attention heads per layer.
        num_layers: GAT layers.
        dropout: dropout on node states and in the head.
        attention_dropout: dropout on attention weights.
        readout: ``mean``, ``sum``, ``max``, ``mean+max``, or ``hopfield``
            (:class:`~graphmem.nn.HopfieldPooling`: a learned query per head attends over
            the atoms of each molecule).
        score: attention score of every layer (see :class:`~graphmem.nn.GATConv`).
        virtual_node: add the virtual node above.
        descriptor_size: ``D`` molecule-level features per graph (``batch.descriptors``,
            ``(G, D)``, e.g. RDKit's 2D descriptors, :mod:`graphmem.data.descriptors`),
            standardised by a batch norm (clamped to 5 standard deviations) and joined to the
            readout before the head, as Chemprop joins its ``rdkit_2d`` features; 0 for none.
        descriptor_fusion: ``"concat"`` (joined to the readout) or ``"mean"`` (a descriptor MLP,
            ``D -> 4 hidden_channels -> T`` with dropout 0.2 on its input and 0.5 inside, whose
            probability is averaged with the graph head's).

    Shapes:
        - input: a PyG ``Batch`` with ``x`` :math:`(N, 9)`, ``edge_index`` :math:`(2, E)`,
          ``edge_attr`` :math:`(E, 3)`, ``batch`` :math:`(N,)`
        - output: :math:`(G, T)` logits
    """

    def __init__(
        self,
        num_tasks: int,
        hidden_channels: int = 128,
        heads: int = 4,
        num_layers: int = 3,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        readout: str = "mean+max",
        score: str = "gat",
        virtual_node: bool = False,
        descriptor_size: int = 0,
        descriptor_fusion: str = "concat",
    ) -> None:
        super().__init__()
        if hidden_channels % heads:
            raise ValueError(f"hidden_channels ({hidden_channels}) must be divisible by heads ({heads})")
        if readout not in READOUTS + MODULE_READOUTS:
            raise ValueError(f"unknown readout {readout!r}; choose one of {READOUTS + MODULE_READOUTS}")
        self.readout = readout
        self.dropout = dropout
        self.hidden_channels = hidden_channels
        self.atom_encoder = AtomEncoder(hidden_channels)
        self.bond_encoders = nn.ModuleList(BondEncoder(hidden_channels) for _ in range(num_layers))
        self.convs = nn.ModuleList()
        for layer in range(num_layers):
            last = layer == num_layers - 1
            self.convs.append(GATConv(hidden_channels, hidden_channels if last else hidden_channels // heads,
                                      heads=heads, concat=not last, dropout=attention_dropout,
                                      edge_dim=hidden_channels, score=score))
        self.norms = nn.ModuleList(SafeBatchNorm1d(hidden_channels) for _ in range(num_layers))
        self.virtual_node = nn.Parameter(torch.zeros(hidden_channels)) if virtual_node else None
        self.virtual_mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden_channels, 2 * hidden_channels), SafeBatchNorm1d(2 * hidden_channels),
                          nn.ReLU(), nn.Linear(2 * hidden_channels, hidden_channels),
                          SafeBatchNorm1d(hidden_channels), nn.ReLU())
            for _ in range(num_layers - 1 if virtual_node else 0))
        if descriptor_fusion not in DESCRIPTOR_FUSIONS:
            raise ValueError(f"unknown descriptor_fusion {descriptor_fusion!r}; choose one of {DESCRIPTOR_FUSIONS}")
        concat = descriptor_size if descriptor_fusion == "concat" else 0
        pooled = hidden_channels * (2 if readout == "mean+max" else 1) + concat
        self.descriptor_size, self.descriptor_fusion = descriptor_size, descriptor_fusion
        # no affine part: a linear layer follows in both fusions
        self.descriptor_norm = SafeBatchNorm1d(descriptor_size, affine=False) if descriptor_size else None
        # the descriptor-only predictor of Chemprop's features_only, with the dropout an MLP on
        # 200 descriptors of 6,000 molecules needs (it overfits within 5 epochs without)
        self.descriptor_mlp = nn.Sequential(
            nn.Dropout(0.2), nn.Linear(descriptor_size, 4 * hidden_channels), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(4 * hidden_channels, num_tasks)) if descriptor_size and descriptor_fusion == "mean" else None
        self.pool = HopfieldPooling(hidden_channels, num_heads=heads) if readout == "hopfield" else None
        self.head = nn.Sequential(nn.Linear(pooled, hidden_channels), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden_channels, num_tasks))

    def node_states(self, batch: Batch, return_attention_weights: bool = False, atom_states: Tensor | None = None):
        """Node states ``(N, hidden)``; with ``return_attention_weights`` also each layer's ``(edge_index, alpha)``.
        ``atom_states`` ``(N, hidden)`` replaces ``AtomEncoder(x)`` (pretraining masks atoms there)."""
        h = self.atom_encoder(batch.x) if atom_states is None else atom_states
        virtual = None if self.virtual_node is None else self.virtual_node.expand(batch.num_graphs, -1)
        attention = []
        for layer, (conv, bond_encoder, norm) in enumerate(zip(self.convs, self.bond_encoders, self.norms)):
            if virtual is not None:
                h = h + virtual[batch.batch]
            out, weights = conv(h, batch.edge_index, bond_encoder(batch.edge_attr), return_attention_weights=True)
            attention.append(weights)
            if layer < len(self.virtual_mlps):
                pooled = global_add_pool(h, batch.batch, size=batch.num_graphs)
                virtual = virtual + F.dropout(self.virtual_mlps[layer](pooled + virtual), self.dropout, self.training)
            h = h + F.dropout(F.elu(norm(out)), self.dropout, self.training)
        return (h, attention) if return_attention_weights else h

    def forward(self, batch: Batch) -> Tensor:
        members = self.member_logits(batch)
        return members[0] if len(members) == 1 else mean_probability_logits(*members)

    def member_logits(self, batch: Batch) -> tuple[Tensor, ...]:
        """The ``(G, T)`` logits of each predictor whose probabilities the model averages: the
        graph head's, and with ``descriptor_fusion="mean"`` the descriptor MLP's."""
        h = self.node_states(batch)
        if self.pool is not None:
            pooled = self.pool(h, batch.batch, size=batch.num_graphs)
        else:
            pooled = graph_readout(h, batch.batch, self.readout, batch.num_graphs)
        if self.descriptor_norm is None:
            return (self.head(pooled),)
        # clamped: a molecule far outside the training range (descriptors are heavy-tailed even
        # after the log) would otherwise give standardised values in the hundreds at test time
        descriptors = self.descriptor_norm(self._descriptors(batch)).clamp(-DESCRIPTOR_CLAMP, DESCRIPTOR_CLAMP)
        if self.descriptor_mlp is None:
            return (self.head(torch.cat([pooled, descriptors], -1)),)
        return self.head(pooled), self.descriptor_mlp(descriptors)

    def _descriptors(self, batch: Batch) -> Tensor:
        descriptors = getattr(batch, "descriptors", None)
        if descriptors is None or descriptors.shape != (batch.num_graphs, self.descriptor_size):
            found = "none" if descriptors is None else f"shape {tuple(descriptors.shape)}"
            raise GraphmemError(f"this MoleculeGAT takes {self.descriptor_size} descriptors per molecule "
                                f"(batch.descriptors, ({batch.num_graphs}, {self.descriptor_size})), got {found}: "
                                f"load the data with MoleculeDataModule(descriptors=True) or "
                                f"graphmem.data.descriptors.add_descriptors")
        return descriptors
