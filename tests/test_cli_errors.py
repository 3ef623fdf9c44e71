"""Entry points print a user error as one line, also when Hydra's instantiate wrapped it, and
no dependency INFO lines that read as errors."""

from __future__ import annotations

import logging

import pytest
from hydra.errors import InstantiationException

from rvc_lora.utils.cli import user_errors
from rvc_lora.utils.errors import ConfigError


def _raises(exc: BaseException):
    @user_errors
    def main() -> None:
        raise exc

    return main


def test_user_error_is_one_line_and_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        _raises(ConfigError("features.mel_numerics='x' unknown; choose one of [...]"))()
    assert stop.value.code == 2
    assert (
        capsys.readouterr().err == "error: features.mel_numerics='x' unknown; choose one of [...]\n"
    )


def test_user_error_raised_inside_instantiate_is_one_line_too(capsys) -> None:
    wrapped = InstantiationException(
        "Error in call to target 'm.M':\nConfigError('bad')\nfull_key: module"
    )
    wrapped.__cause__ = ConfigError("bad value; use another")
    with pytest.raises(SystemExit) as stop:
        _raises(wrapped)()
    assert stop.value.code == 2
    assert capsys.readouterr().err == "error: bad value; use another\n"


def test_other_instantiate_errors_are_left_to_hydra() -> None:
    wrapped = InstantiationException("Error in call to target 'm.M':\nValueError('x')")
    wrapped.__cause__ = ValueError("x")
    with pytest.raises(InstantiationException):
        _raises(wrapped)()


def test_faiss_build_probing_is_not_printed() -> None:
    # "Could not load library with AVX512 support ... ModuleNotFoundError" at INFO, every run.
    assert logging.getLogger("faiss.loader").getEffectiveLevel() == logging.WARNING
