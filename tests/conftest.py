import pytest
import torch

import kernels  # noqa: F401  (chooses Triton's interpreter on CPU before triton is imported)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def device():
    return DEVICE


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """One intra-op thread: the test models are tiny, and a second thread only adds barrier
    waits (x1000 per op when the 2-core machine is busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _poison_kernel_outputs(monkeypatch):
    """Every kernel output starts as NaN / -1 in tests, so unwritten elements are caught."""
    from kernels import _alloc

    monkeypatch.setattr(_alloc, "poison", True)
