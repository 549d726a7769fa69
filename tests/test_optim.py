"""GravesRMSprop against eq. 38-41 of Graves (2013) computed by hand."""

import pytest
import torch

from graphmem.optim import GravesRMSprop


def test_matches_graves_equations_by_hand():
    torch.manual_seed(0)
    w = torch.randn(5, requires_grad=True)
    start = w.detach().clone()
    lr, alpha, momentum, eps = 1e-2, 0.95, 0.9, 1e-4
    optimizer = GravesRMSprop([w], lr=lr, alpha=alpha, momentum=momentum, eps=eps)
    n = torch.zeros(5)
    g = torch.zeros(5)
    delta = torch.zeros(5)
    expected = start.clone()
    for step in range(4):
        grad = torch.randn(5)
        w.grad = grad.clone()
        optimizer.step()
        n = alpha * n + (1 - alpha) * grad**2
        g = alpha * g + (1 - alpha) * grad
        delta = momentum * delta - lr * grad / torch.sqrt(n - g**2 + eps)
        expected = expected + delta
        torch.testing.assert_close(w.detach(), expected, rtol=1e-5, atol=1e-7)


def test_eps_inside_the_root_damps_tiny_gradients():
    # torch's RMSprop rescales any gradient to a full step; eps inside the root does not
    w = torch.zeros(1, requires_grad=True)
    optimizer = GravesRMSprop([w], lr=1.0, momentum=0.0, eps=1.0)
    w.grad = torch.full((1,), 1e-3)
    optimizer.step()
    assert abs(w.item()) < 2e-3


@pytest.mark.parametrize("kwargs", [{"lr": -1.0}, {"alpha": 1.0}, {"momentum": -0.1}, {"eps": -1.0}])
def test_bad_settings_are_named(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        GravesRMSprop([torch.zeros(1, requires_grad=True)], **kwargs)
