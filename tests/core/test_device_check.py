"""The GPU stand-in ``helpers.device_check.OneDevice`` catches what a CUDA run would trip on: ops mixing
devices and host reads of device values (the device-placement tests of cosmos3/ and ltx2/ rely on it)."""

import pytest
import torch

from helpers.device_check import DeviceMismatch, OneDevice

META = torch.device("meta")


def test_the_check_catches_mixed_devices_and_host_reads():
    w, x = torch.ones(4, 4, device=META), torch.ones(2, 4)
    with OneDevice():
        with pytest.raises(DeviceMismatch, match="mm"):
            torch.nn.functional.linear(x, w)  # meta's own kernel lets this through
        with pytest.raises(DeviceMismatch):
            torch.cat([w, torch.zeros(1, 4)])
        assert (w * torch.tensor(2.0)).device == META  # a 0-dim CPU scalar is fine, as on CUDA
        assert (w + x.to(META)[0]).device == META
        with pytest.raises(RuntimeError, match="meta"):
            w.sum().item()
