"""NTM controllers: an LSTM or a feed-forward network that drives the heads."""

from __future__ import annotations

import torch
from torch import Tensor, nn

ControllerState = tuple[Tensor, ...]


class LSTMController(nn.Module):
    """A stack of ``num_layers`` LSTM cells; the state is ``(h, c)``, each ``(L, B, hidden)``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cells = nn.ModuleList(
            nn.LSTMCell(input_size if i == 0 else hidden_size, hidden_size) for i in range(num_layers)
        )

    def reset_parameters(self) -> None:
        for cell in self.cells:
            cell.reset_parameters()

    def initial_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> ControllerState:
        zeros = torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device, dtype=dtype)
        return zeros, zeros.clone()

    def forward(self, x: Tensor, state: ControllerState) -> tuple[Tensor, ControllerState]:
        h_all, c_all = state
        hs, cs = [], []
        for layer, cell in enumerate(self.cells):
            h, c = cell(x, (h_all[layer], c_all[layer]))
            hs.append(h)
            cs.append(c)
            x = h
        return x, (torch.stack(hs), torch.stack(cs))


class FeedForwardController(nn.Module):
    """A multi-layer perceptron with ReLU; it keeps no state (memory is its only recurrence)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers += [nn.Linear(input_size if i == 0 else hidden_size, hidden_size), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def reset_parameters(self) -> None:
        for module in self.net:
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def initial_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> ControllerState:
        return ()

    def forward(self, x: Tensor, state: ControllerState) -> tuple[Tensor, ControllerState]:
        return self.net(x), state
