"""Fixtures shared by the LTX-2 tests: tiny whole checkpoints in the real formats and a tiny Gemma-3 (built by
``helpers.ltx2_checkpoint_ref``, once per module and version)."""

import pytest
import torch

from helpers.ltx2_checkpoint_ref import VERSIONS, build_gemma_folder, build_hq_checkpoint, build_tiny_checkpoint


@pytest.fixture(scope="module", params=VERSIONS)
def tiny(request, tmp_path_factory):
    """(version, states per component, diffusers folder, official file, official tensors, official config);
    parametrised over LTX-2.0 and LTX-2.3 (a module narrows it with ``indirect`` parametrisation)."""
    return build_tiny_checkpoint(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def gemma_folder(tmp_path_factory):
    """(folder, model): a tiny random Gemma-3 saved as a Hugging Face folder with its tokenizer."""
    return build_gemma_folder(tmp_path_factory)


@pytest.fixture
def hq_ckpt(tiny, tmp_path_factory):
    """(official single file, diffusers folder) of a well-conditioned tiny LTX-2.3 for the HQ runs."""
    return build_hq_checkpoint(tiny, tmp_path_factory)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models (syncing threads costs more than it gains on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
