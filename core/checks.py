"""Checks shared by every way into the pack (command line, Python API, graph nodes, headless runner).

Two kinds of problem, told apart because a command line answers them differently:

* :class:`OptionError`: an option the user gave is wrong (a width of 0, a NaN guidance, an output file of an
  unknown kind). Raised by the checks that run before any model is loaded, so the user learns it at once. It
  knows the fields it is about, so each door can say it with the names its user typed (``--frames``,
  ``frames``, ``num_frames``): :meth:`OptionError.describe`.
* :class:`NonFiniteError`: a result holds NaN or infinite values. Written out, such frames become a black or
  broken file; every writer and decoder refuses them instead.

The helpers below check one value each and return it in its plain Python type.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import torch

__all__ = ["NonFiniteError", "OptionError", "integer", "number", "require_finite"]


def _show(value) -> str:
    """The value as the message shows it: long ones (lists, paths) keep their start and, where a file name sits,
    their end."""
    text = repr(value)
    return text if len(text) <= 160 else text[:60] + "..." + text[-97:]


class OptionError(ValueError):
    """A wrong option. ``fields`` are the option names it is about (the Python API's spelling), ``values`` their
    values and ``problem`` what is wrong with them and what to do instead."""

    def __init__(self, fields: str | tuple[str, ...], values, problem: str):
        single = isinstance(fields, str)
        self.fields = (fields,) if single else tuple(fields)
        self.values = (values,) if single else tuple(values)
        self.problem = problem
        super().__init__(self.describe())

    def describe(self, names: Mapping[str, str] | None = None) -> str:
        """The message, each field called by ``names[field]`` when given (e.g. ``{"num_frames": "--frames"}``)."""
        names = names or {}
        shown = ", ".join(f"{names.get(f, f)}={_show(v)}" for f, v in zip(self.fields, self.values))
        return f"{shown}: {self.problem}"


class NonFiniteError(ValueError):
    """A computed result holds NaN or infinite values (nothing is written from it)."""


def integer(field: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; booleans and fractional numbers are refused, not rounded."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptionError(field, value, "must be a whole number")
    value = int(value)
    if low is not None and value < low:
        raise OptionError(field, value, f"must be at least {low}")
    if high is not None and value > high:
        raise OptionError(field, value, f"must be at most {high}")
    return value


def number(field: str, value, *, low: float | None = None, high: float | None = None, hint: str = "") -> float:
    """``value`` as a finite float in ``[low, high]``; NaN and infinities are refused. ``hint`` is added to the
    message (e.g. what the value means)."""
    hint = f" ({hint})" if hint else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(field, value, f"must be a number{hint}")
    value = float(value)
    if not math.isfinite(value):
        raise OptionError(field, value, f"must be a finite number{hint}")
    if low is not None and value < low:
        raise OptionError(field, value, f"must be at least {low:g}{hint}")
    if high is not None and value > high:
        raise OptionError(field, value, f"must be at most {high:g}{hint}")
    return value


def require_finite(values: torch.Tensor, what: str) -> torch.Tensor:
    """Raise :class:`NonFiniteError` when ``values`` holds NaN or an infinity; return it unchanged otherwise.

    One reduction (``aminmax`` propagates NaN, so both ends are finite exactly when every value is) and one read
    back to the host, made once per result, never inside a sampling loop. Tensors on the ``meta`` device hold no
    values and pass.
    """
    if values.device.type == "meta" or values.numel() == 0:
        return values
    if values.is_floating_point() or values.is_complex():
        ends = torch.stack(torch.aminmax(values.detach().reshape(-1))).tolist()
        if not all(math.isfinite(v) for v in ends):
            raise NonFiniteError(
                f"{what} hold NaN or infinite values, so nothing was written (they would make a black or broken "
                "file). Usual causes: a NaN or infinite input, or float16 overflow; try bf16 or fp32"
            )
    return values
