"""Shared, model-agnostic building blocks: attention, rotary tables, norms, samplers, checkpoint I/O."""
