"""Checkpoints are read without executing code, and bad files give one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from rvc_lora.models import build_synthesizer, load_rvc_checkpoint
from rvc_lora.utils.errors import CheckpointError


class _Payload:
    """Unpickling this runs ``exec`` on a snippet that writes a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


def test_code_payload_is_refused_and_never_runs(tmp_path) -> None:
    marker = tmp_path / "pwned.txt"
    state = build_synthesizer("tiny").state_dict()
    path = tmp_path / "evil.pth"
    torch.save({"model": state, "extra": _Payload(str(marker))}, path)

    with pytest.raises(CheckpointError) as err:
        load_rvc_checkpoint(path)
    assert "refused to load" in str(err.value) and str(path) in str(err.value)
    assert not marker.exists()

    # The payload is live: an unrestricted load (in a child process) does run it.
    code = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True)
    assert marker.read_text() == "payload ran"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such checkpoint file"),
        (b"", "file is empty"),
        (b"this is a text file, not a model\n", "not a readable PyTorch checkpoint"),
    ],
)
def test_unreadable_files_give_one_line_errors(tmp_path, content, message) -> None:
    path = tmp_path / "model.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as err:
        load_rvc_checkpoint(path)
    assert "\n" not in str(err.value)


def test_truncated_checkpoint_is_reported(tmp_path) -> None:
    path = tmp_path / "cut.pth"
    torch.save({"model": build_synthesizer("tiny").state_dict()}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated|not a readable"):
        load_rvc_checkpoint(path)


def test_non_model_pickle_is_refused(tmp_path) -> None:
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_rvc_checkpoint(tmp_path / "list.pth")
    torch.save({"foo": 1}, tmp_path / "dict.pth")
    with pytest.raises(CheckpointError, match="unknown layout"):
        load_rvc_checkpoint(tmp_path / "dict.pth")
