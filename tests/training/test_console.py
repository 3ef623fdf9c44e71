"""training.console: Lightning's lines once, through the root handlers; the logging interval."""

from __future__ import annotations

import logging
import warnings
from types import SimpleNamespace

import pytest

from rvc_lora.training import console


@pytest.fixture
def lightning_loggers():
    saved = {}
    for name in (*console.LIGHTNING_LOGGERS, "lightning.pytorch.utilities.rank_zero", ""):
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.propagate, list(logger.filters))
    yield
    for name, (handlers, propagate, filters) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.propagate, logger.filters[:] = handlers, propagate, filters


def test_lightning_lines_go_through_the_root_handlers_only(lightning_loggers, tmp_path) -> None:
    root, lightning = logging.getLogger(), logging.getLogger("lightning")
    root.handlers[:] = [logging.StreamHandler()]
    own_console, file_log = logging.StreamHandler(), logging.FileHandler(tmp_path / "x.log")
    lightning.handlers[:] = [own_console, file_log]
    logging.getLogger("lightning.pytorch").propagate = False
    console.log_once()
    assert lightning.handlers == [file_log]
    assert all(logging.getLogger(n).propagate for n in console.LIGHTNING_LOGGERS)
    file_log.close()


def test_without_root_handlers_lightning_keeps_its_own(lightning_loggers) -> None:
    logging.getLogger().handlers[:] = []
    own_console = logging.StreamHandler()
    logging.getLogger("lightning").handlers[:] = [own_console]
    console.log_once()
    assert logging.getLogger("lightning").handlers == [own_console]


def test_tips_are_dropped_and_other_lightning_info_kept(lightning_loggers) -> None:
    logging.getLogger().handlers[:] = [logging.StreamHandler()]
    console.log_once()
    console.log_once()  # a second run in the same process adds nothing
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert rank_zero.filters.count(console._DROP_TIPS) == 1

    def record(msg: str) -> logging.LogRecord:
        return rank_zero.makeRecord(rank_zero.name, logging.INFO, __file__, 1, msg, (), None)

    assert not rank_zero.filter(record("💡 Tip: For seamless cloud logging ..."))
    assert rank_zero.filter(record("GPU available: False, used: False"))


def test_only_the_listed_dependency_warning_is_ignored() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        console.quiet_warnings()
        for module, category in [
            ("lightning.pytorch.utilities._pytree", FutureWarning),  # ignored
            ("lightning.pytorch.utilities._pytree", UserWarning),
            ("my_code", FutureWarning),
        ]:
            warnings.warn_explicit(
                "`isinstance(treespec, LeafSpec)` is deprecated, use ...",
                category,
                "f.py",
                1,
                module,
            )
        warnings.warn_explicit("something else is deprecated", FutureWarning, "f.py", 1, "m")
    assert [(str(w.message)[:20], w.category) for w in caught] == [
        ("`isinstance(treespec", UserWarning),
        ("`isinstance(treespec", FutureWarning),
        ("something else is de", FutureWarning),
    ]


class _Data:
    def __init__(self, n: int) -> None:
        self.n = n

    def train_dataloader(self) -> list[int]:
        return list(range(self.n))


@pytest.mark.parametrize(
    ("configured", "limit", "expected"),
    [(5, 1.0, 4), (3, 1.0, 3), (5, 2, 2), (5, 0.5, 2), (50, 10, 4), (0, 1.0, 0)],
)
def test_log_interval_is_at_most_the_batches_per_epoch(configured, limit, expected) -> None:
    trainer = SimpleNamespace(
        log_every_n_steps=configured,
        limit_train_batches=limit,
        fast_dev_run=False,
        datamodule=_Data(4),
    )
    console.LogIntervalWithinEpoch().setup(trainer, None, "fit")
    assert trainer.log_every_n_steps == expected


def test_unknown_batch_count_leaves_the_interval() -> None:
    trainer = SimpleNamespace(
        log_every_n_steps=5, limit_train_batches=1.0, fast_dev_run=False, datamodule=None
    )
    console.LogIntervalWithinEpoch().setup(trainer, None, "fit")
    assert trainer.log_every_n_steps == 5
