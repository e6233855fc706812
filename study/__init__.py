"""sashimi-study: S4 / SaShiMi raw-audio music generation, reproducible studies, reports.

Importing the package stays light: torch and the rest load only when a function below needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from study.training.checkpoint import Checkpoint

__version__ = "0.1.0"


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint written by `study train`: config, step, epoch, metrics, weights, sha256.

    `study.load_checkpoint("runs/.../checkpoints/best.pt").model()` rebuilds the network. The file is
    verified (header, checksum) and read with torch.load(weights_only=True); never unpickle it fully.
    """
    from study.training.checkpoint import open_checkpoint
    return open_checkpoint(path)
