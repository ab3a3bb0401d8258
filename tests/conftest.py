import pytest
import torch

import kernels  # noqa: F401  (chooses Triton's interpreter on CPU before triton is imported)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def device():
    return DEVICE


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _poison_kernel_outputs(monkeypatch):
    """Every kernel output starts as NaN / -1 in tests, so unwritten elements are caught."""
    from kernels import _alloc

    monkeypatch.setattr(_alloc, "poison", True)
