"""Closed sets of values, each declared once: the options, the HTTP schemas, the CLI and the
training config all take their choices from here. Imports nothing heavy (decode workers load it)."""

from __future__ import annotations

from typing import Literal

Activation = Literal["auto", "gelu", "quickgelu"]
