"""Guardrails: checks on prompts and on generated frames (text guard, face pixelation)."""
