"""Peak memory is per run, also in a process that ran a bigger job before (joblib workers)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from rvc_lora.training.run import peak_memory_mb, reset_peak_memory

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/proc/self/clear_refs").exists(),
    reason="peak RSS reset needs Linux's /proc/self/clear_refs",
)


@linux_only
def test_reset_forgets_an_earlier_peak_and_the_next_one_counts() -> None:
    big = np.ones(300 * 2**20 // 8)  # 300 MB touched
    before = peak_memory_mb()
    del big
    reset_peak_memory()
    after = peak_memory_mb()
    assert after < before - 200
    small = np.ones(60 * 2**20 // 8)
    assert peak_memory_mb() >= after + 50
    del small
