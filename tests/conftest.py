"""Test configuration: the `cuda` marker skips where no CUDA device or CUDA build of rdnas exists."""

import zlib

import pytest
import torch

from tolerances import CUDA_OK, DEVICES


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device and a CUDA build of rdnas (rdnas.built_with_cuda())")
    for item in items:
        if "cuda" in item.keywords and not CUDA_OK:
            item.add_marker(skip_cuda)


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def seeded_global_generator(request):
    """Seed torch's global generator from the test's id, so a test draws the same numbers whatever ran before it."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch at one thread for a whole module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``), as
    the builds and scoring jobs whose bitwise results those tests pin run; the thread count is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
