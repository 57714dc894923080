import os
import sys

import pytest
import torch

# The suite's shared helpers (tests/helpers: oracles, error measures, counters, stand-ins) import as ``helpers``.
# Test parts: core/, cosmos3/, ltx2/, nodes/, headless/, each with its own conftest.py for its fixtures.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield
