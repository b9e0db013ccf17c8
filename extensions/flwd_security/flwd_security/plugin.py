"""The extension's hook implementations (the `security` entry point of the `flwd` group)."""

from __future__ import annotations
