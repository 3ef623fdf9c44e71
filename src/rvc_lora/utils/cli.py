"""Shared pieces of the command-line entry points: where configs live, user-facing errors."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rvc_lora.utils.errors import RvcLoraError

# configs/ sits at the repository root (DESIGN.md); the package is installed editable from it.
CONFIG_DIR = str(Path(__file__).resolve().parents[3] / "configs")

log = logging.getLogger("rvc_lora")


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("rvc_lora.wandb_offline"):
        # W&B runs offline unless an API key is configured, so a sweep never blocks on a login.
        OmegaConf.register_new_resolver(
            "rvc_lora.wandb_offline", lambda: not os.environ.get("WANDB_API_KEY")
        )


_register_resolvers()

# faiss logs which CPU build it loads at INFO, including "Could not load library with AVX512
# support ... ModuleNotFoundError" lines that read as errors; it works either way.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print an :class:`RvcLoraError` as one line and exit 2, instead of a traceback.

    Also when a constructor that Hydra's ``instantiate`` called raised it: Hydra wraps it in an
    ``InstantiationException`` whose message is several lines around the repr of ours.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RvcLoraError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except Exception as exc:
            cause = exc.__cause__
            if type(exc).__name__ != "InstantiationException" or not isinstance(
                cause, RvcLoraError
            ):
                raise
            print(f"error: {cause}", file=sys.stderr)
            sys.exit(2)

    return wrapper
