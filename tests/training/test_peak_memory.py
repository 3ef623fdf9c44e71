"""Peak memory is per run, also in a process that ran a bigger job before (joblib workers)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/proc/self/clear_refs").exists(),
    reason="peak RSS reset needs Linux's /proc/self/clear_refs",
)

# A fresh interpreter, and anonymous mappings touched page by page: in the test worker, an
# allocation can be served from memory the allocator freed earlier without growing the RSS, so
# whether the second peak shows would depend on which tests ran before.
_PROBE = textwrap.dedent(
    """
    import json, mmap
    from rvc_lora.training.run import peak_memory_mb, reset_peak_memory

    def touched(mb):
        m = mmap.mmap(-1, mb * 2**20)
        for i in range(0, len(m), mmap.PAGESIZE):
            m[i] = 1
        return m

    big = touched(300)
    before = peak_memory_mb()
    big.close()
    reset_peak_memory()
    after = peak_memory_mb()
    small = touched(60)
    print(json.dumps({"before": before, "after": after, "again": peak_memory_mb()}))
    """
)


@linux_only
def test_reset_forgets_an_earlier_peak_and_the_next_one_counts() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    mb = json.loads(out.stdout.strip().splitlines()[-1])
    assert mb["after"] < mb["before"] - 250
    assert mb["again"] >= mb["after"] + 50


# The reused-worker case: an earlier job's freed heap stays resident (a live block above it
# keeps free() from shrinking the heap), so without malloc_trim the next job would reuse it
# and measure ~0 MB; without the peak reset it would measure the earlier job's peak.
_TRAIN_PROBE = textwrap.dedent(
    """
    import json
    import numpy as np
    from rvc_lora.training.run import current_memory_mb, peak_memory_mb, start_memory_measurement

    def touched(n_mb):
        return [np.ones(2**20 // 8) for _ in range(n_mb)]  # 1 MB chunks, every page written

    one = touched(1)
    del one  # glibc raises its mmap threshold: the chunks below come from the heap
    earlier = touched(200)
    pin = touched(1)
    full = current_memory_mb()
    del earlier
    freed = current_memory_mb()
    base = start_memory_measurement()
    job = touched(100)
    train = peak_memory_mb() - base
    print(json.dumps({"full": full, "freed": freed, "base": base, "train": train}))
    """
)


@linux_only
def test_train_memory_counts_what_the_job_adds_in_a_reused_worker() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _TRAIN_PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    mb = json.loads(out.stdout.strip().splitlines()[-1])
    assert mb["freed"] > mb["full"] - 50  # the scenario: freed but still resident
    assert mb["base"] < mb["freed"] - 150  # handed back before the baseline
    assert 80 <= mb["train"] <= 140
