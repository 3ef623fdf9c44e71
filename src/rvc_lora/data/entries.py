"""What a valid slice entry and feature entry hold: checks passed to the cache readers.

A checksum proves that an entry is the one that was written, not that what was written is
usable: an entry from another version of this code, or written from a NaN-producing encoder,
passes the checksum. These checks turn such entries into "damaged" (rebuilt by the preparation,
a one-line error for training) instead of batches of garbage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rvc_lora.data.cache import Check

# Content frames are 20 ms and F0 frames 10 ms; their counts differ by the encoder's 400-sample
# window (a frame or two); a larger gap means the arrays do not belong together.
_FRAME_SLACK = 4


def _vector(arrays: Mapping[str, np.ndarray], name: str, kind: str) -> str | None:
    x = arrays.get(name)
    if x is None:
        return f"has no '{name}'"
    if x.ndim != 1 or x.dtype.kind not in kind:
        what = "float" if kind == "f" else "int"
        return f"'{name}' is {x.dtype}{list(x.shape)}, not a 1-d {what} array"
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        return f"'{name}' holds NaN or Inf"
    return None


def check_slice(sr: int | None = None) -> Check:
    """Check of a slice entry: ``wav [N]`` at ``sr`` and ``wav16k [N * 16000 / sr]``, finite."""
    return _SliceCheck(sr)


def check_features(dim: int | None = None) -> Check:
    """Check of a feature entry: ``feats [T50, D]``, ``f0 [T100]`` (Hz, >= 0) and ``pitch
    [T100]`` (coarse, 1..255), finite and of matching lengths."""
    return _FeatureCheck(dim)


# Classes rather than closures: datasets holding them are pickled into spawned workers.
@dataclass(frozen=True)
class _SliceCheck:
    sr: int | None

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> str | None:
        sr = self.sr
        for name in ("wav", "wav16k"):
            if (problem := _vector(arrays, name, "f")) is not None:
                return problem
        wav, wav16k = arrays["wav"], arrays["wav16k"]
        if len(wav) == 0:
            return "'wav' is empty"
        if sr is not None and abs(len(wav16k) - len(wav) * 16000 / sr) > 2:
            return f"'wav16k' has {len(wav16k)} samples for {len(wav)} at {sr} Hz"
        return None


@dataclass(frozen=True)
class _FeatureCheck:
    dim: int | None

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> str | None:
        dim = self.dim
        feats = arrays.get("feats")
        if feats is None:
            return "has no 'feats'"
        if feats.ndim != 2 or feats.dtype.kind != "f" or 0 in feats.shape:
            return f"'feats' is {feats.dtype}{list(feats.shape)}, not a [frames, dim] float array"
        if dim is not None and feats.shape[1] != dim:
            return f"'feats' has {feats.shape[1]}-d frames, expected {dim}-d"
        if not np.isfinite(feats).all():
            return "'feats' holds NaN or Inf"
        for name, kind in (("f0", "f"), ("pitch", "iu")):
            if (problem := _vector(arrays, name, kind)) is not None:
                return problem
        f0, pitch = arrays["f0"], arrays["pitch"]
        if len(f0) == 0 or len(pitch) != len(f0) or abs(len(f0) - 2 * len(feats)) > _FRAME_SLACK:
            return (
                f"lengths do not match: feats {len(feats)}, f0 {len(f0)}, pitch {len(pitch)} "
                f"(f0 and pitch should be twice feats)"
            )
        if (f0 < 0).any() or pitch.min() < 1 or pitch.max() > 255:
            return "f0 below 0 Hz or coarse pitch outside 1..255"
        return None
