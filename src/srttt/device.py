"""Choosing the torch device from the ``device`` key of params.yaml."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """Return the device for ``name``: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``."""
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "params.yaml sets device: cuda but torch finds no CUDA device "
            f"(torch {torch.__version__}); set device: auto or cpu, or install a CUDA build of torch"
        )
    else:
        device = torch.device(name)
    logger.info("torch device: %s", device)
    return device
