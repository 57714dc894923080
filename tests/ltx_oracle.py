"""Access to Lightricks' ltx-core / ltx-pipelines 1.0.0, the LTX test oracles (installed with --no-deps).

Their package ``__init__``s import torchaudio for the audio encoder's front end, which the tests never
use and which has no CPU build on the registry. An empty stand-in module lets them import; it is installed
only when no real torchaudio is present.
"""

import importlib.machinery
import importlib.util
import sys
import types


def ltx_oracles_available() -> bool:
    """True when ltx_core and ltx_pipelines can be imported (after stubbing a missing torchaudio)."""
    if importlib.util.find_spec("ltx_core") is None or importlib.util.find_spec("ltx_pipelines") is None:
        return False
    if importlib.util.find_spec("torchaudio") is None and "torchaudio" not in sys.modules:
        stub = types.ModuleType("torchaudio")
        stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = stub
    return True
