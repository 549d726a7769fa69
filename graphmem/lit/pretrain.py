"""Self-supervised pretraining of a molecule encoder by attribute masking, and loading its weights to fine-tune."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from ogb.utils.features import get_atom_feature_dims
from torch import Tensor, nn
from torch_geometric.data import Batch

from graphmem.errors import GraphmemError
from graphmem.lit.checkpoint import check_checkpoint
from graphmem.models.molecule import ENCODER

# OGB's first atom feature: the atomic number, 118 elements and "misc"
NUM_ATOM_TYPES = get_atom_feature_dims()[0]


def atom_mask(batch: Tensor, rate: float, generator: torch.Generator | None = None) -> Tensor:
    """A boolean ``(N,)`` mask that picks ``max(1, round(rate * n))`` atoms, uniformly without
    replacement, in each molecule of ``n`` atoms (``batch`` ``(N,)``, sorted, as PyG batches are)."""
    num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    sizes = torch.bincount(batch, minlength=num_graphs)
    picks = (sizes.double() * rate).round().long().clamp(min=1)
    noise = torch.rand(batch.numel(), generator=generator).to(batch.device)
    # sorted by molecule, then at random within it: an atom's rank is its place in its molecule
    order = torch.argsort(batch.double() * 2 + noise)
    starts = torch.cumsum(sizes, 0) - sizes
    rank = torch.arange(batch.numel(), device=batch.device) - starts[batch[order]]
    mask = torch.zeros(batch.numel(), dtype=torch.bool, device=batch.device)
    mask[order] = rank < picks[batch[order]]
    return mask


class AttributeMaskingTask(L.LightningModule):
    r"""Attribute masking (Hu et al. 2020, *Strategies for Pre-training Graph Neural Networks*):
    the embeddings of a random ``mask_rate`` of each molecule's atoms (at least one) are replaced
    by one learned mask vector, and a linear layer on the encoder's node states predicts the
    masked atoms' elements.

    .. math::
        h^{(0)}_v = \begin{cases} m & v \in M \\ \mathrm{AtomEncoder}(x_v) & \text{else} \end{cases},
        \quad \mathcal{L} = -\frac{1}{|M|} \sum_{v \in M} \log \mathrm{softmax}(W h^{(L)}_v + b)_{z_v}

    with :math:`z_v` the element of atom :math:`v` (OGB's first atom feature, 119 classes). Only
    the encoder (``model.node_states``: :data:`graphmem.models.molecule.ENCODER`) is trained;
    a :class:`~graphmem.lit.GraphPropertyTask` with ``pretrained`` set to this task's checkpoint
    starts from it. Validation masks the same atoms every epoch, so ``val_loss`` and
    ``val_accuracy`` (masked atoms whose element is predicted) compare across epochs.

    Args:
        model: a network with ``node_states(batch, atom_states=...)``, ``atom_encoder`` and
            ``hidden_channels``, e.g. :class:`graphmem.models.MoleculeGAT`.
        mask_rate: the part of each molecule's atoms masked (Hu et al.: 0.15).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
    """

    def __init__(self, model: nn.Module, mask_rate: float = 0.15, lr: float = 1e-3, weight_decay: float = 0.0) -> None:
        super().__init__()
        if not 0 < mask_rate < 1:
            raise GraphmemError(f"mask_rate must be between 0 and 1, got {mask_rate}")
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.mask_token = nn.Parameter(torch.zeros(model.hidden_channels))
        self.classifier = nn.Linear(model.hidden_channels, NUM_ATOM_TYPES)

    def forward(self, batch: Batch, mask: Tensor) -> Tensor:
        """Element logits ``(|M|, 119)`` of the masked atoms ``mask`` ``(N,)``."""
        atoms = self.model.atom_encoder(batch.x)
        atoms = torch.where(mask.unsqueeze(-1), self.mask_token.to(atoms.dtype), atoms)
        return self.classifier(self.model.node_states(batch, atom_states=atoms)[mask])

    def _step(self, batch: Batch, stage: str, generator: torch.Generator | None = None) -> Tensor:
        mask = atom_mask(batch.batch, self.hparams.mask_rate, generator)
        logits, target = self(batch, mask), batch.x[mask, 0]
        loss = F.cross_entropy(logits, target)
        self.log(f"{stage}_loss", loss, batch_size=batch.num_graphs, prog_bar=True, sync_dist=stage == "val")
        if stage == "val":
            accuracy = (logits.argmax(-1) == target).float().mean()
            self.log("val_accuracy", accuracy, batch_size=batch.num_graphs, prog_bar=True, sync_dist=True)
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        # the same atoms of a batch every epoch (the validation loader does not shuffle)
        self._step(batch, "val", torch.Generator().manual_seed(batch_idx))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def load_encoder(model: nn.Module, path: str | os.PathLike) -> int:
    """Copies the encoder weights (:data:`~graphmem.models.molecule.ENCODER`) of the checkpoint
    at ``path`` into ``model``: an :class:`AttributeMaskingTask`'s, or a
    :class:`~graphmem.lit.GraphPropertyTask`'s (transfer from another molecule task). The rest
    of ``model`` (readout, head, descriptor MLP) keeps its initialisation. Returns the number of
    tensors copied; refuses, naming the tensor, an encoder of another architecture."""
    check_checkpoint(path)
    if not Path(path).is_file():
        # check_checkpoint leaves names like "last" to Lightning; here only a file makes sense
        raise GraphmemError(f"pretrained checkpoint {path} is not a file; pass the .ckpt of a pretraining run "
                            f"(graphmem fit --config recipes/molecule_pretrain.yaml)")
    state = torch.load(path, map_location="cpu", weights_only=True).get("state_dict", {})
    source = {key[len("model."):]: value for key, value in state.items()
              if key.startswith("model.") and key.split(".")[1] in ENCODER}
    target = {key: value for key, value in model.state_dict().items() if key.split(".")[0] in ENCODER}
    if not source:
        raise GraphmemError(f"{path} holds no molecule encoder (no model.{ENCODER[0]}.* weights): pass the "
                            f"checkpoint of a pretraining run or of a molecule recipe")
    missing, unexpected = sorted(set(target) - set(source)), sorted(set(source) - set(target))
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise GraphmemError(f"the encoder in {path} is not this model's: {first} is "
                            f"{'missing there' if missing else 'there but not here'} ({len(missing)} tensors missing, "
                            f"{len(unexpected)} extra); pretrain with the same num_layers, score and virtual_node")
    for key, value in target.items():
        if source[key].shape != value.shape:
            raise GraphmemError(f"the encoder in {path} is not this model's: {key} is {tuple(source[key].shape)} "
                                f"there, {tuple(value.shape)} here; pretrain with the same hidden_channels and heads")
    model.load_state_dict(source, strict=False)
    return len(source)
