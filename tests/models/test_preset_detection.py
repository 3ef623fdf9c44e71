"""Which preset a file is: found from its shapes, then its metadata, never guessed."""

from __future__ import annotations

import pytest
import torch

from rvc_lora.models import build_synthesizer, load_rvc_checkpoint
from rvc_lora.models.checkpoint import _match_preset
from rvc_lora.models.presets import PRESETS
from rvc_lora.utils.errors import CheckpointError

# v1_32k and v1_48k differ only in upsample rates (and spec_channels, seen only by enc_q); a
# model without F0 has no layer whose shape depends on the rates, so without enc_q they tie.
AMBIGUOUS = {"v1_32k", "v1_48k"}


def _meta_state(preset: str, f0: bool, enc_q: bool) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        state = build_synthesizer(preset, f0).state_dict()
    return {k: v for k, v in state.items() if enc_q or not k.startswith("enc_q.")}


def _cheap_file(path, preset: str, **meta) -> None:
    """A v1_48k-sized file in a few hundred KB: every tensor is one fp16 value, broadcast."""
    state = {
        k: torch.zeros(1, dtype=torch.float16).expand(v.shape)
        for k, v in _meta_state(preset, False, enc_q=False).items()
    }
    torch.save({"model": state, **meta}, path)


@pytest.mark.parametrize("enc_q", [True, False])
@pytest.mark.parametrize("f0", [True, False])
def test_every_preset_state_dict_is_identified_as_itself(f0: bool, enc_q: bool) -> None:
    for name in PRESETS:
        state = _meta_state(name, f0, enc_q)
        if not f0 and not enc_q and name in AMBIGUOUS:
            with pytest.raises(CheckpointError, match="v1_32k.*v1_48k"):
                _match_preset(state, "x.pth")
            continue
        found, config, found_f0 = _match_preset(state, "x.pth")
        assert (found, found_f0, config) == (name, f0, PRESETS[name])


def test_ambiguous_v1_48k_without_f0_and_enc_q_is_refused_naming_both(tmp_path) -> None:
    path = tmp_path / "G48k_noenc.pth"
    _cheap_file(path, "v1_48k")
    with pytest.raises(CheckpointError) as err:
        load_rvc_checkpoint(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ")
    assert "fits 2 presets equally (v1_32k, v1_48k)" in msg
    assert "model=v1_32k or model=v1_48k" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "meta",
    [{"sr": "48k"}, {"sr": 48000}, {"config": PRESETS["v1_48k"].to_rvc_list()}],
    ids=["sr-tag", "sr-int", "config-list"],
)
def test_metadata_chooses_between_presets_that_fit_equally(tmp_path, meta) -> None:
    path = tmp_path / "G.pth"
    _cheap_file(path, "v1_48k", **meta)
    loaded = load_rvc_checkpoint(path)
    assert (loaded.preset, loaded.sr, loaded.f0) == ("v1_48k", 48000, False)
    assert loaded.config.upsample_rates == (10, 6, 2, 2, 2)
    # What the state dict alone cannot say, matched on the meta device only (no allocation):
    found, config, _ = _match_preset(_meta_state("v1_32k", False, False), "x", meta={"sr": "32k"})
    assert (found, config.upsample_rates) == ("v1_32k", (10, 4, 2, 2, 2))


def test_preset_named_by_caller_chooses_and_is_checked() -> None:
    state = _meta_state("v1_48k", False, enc_q=False)
    assert _match_preset(state, "x", preset="v1_48k")[0] == "v1_48k"
    assert _match_preset(state, "x", preset="v1_32k")[0] == "v1_32k"
    with pytest.raises(CheckpointError, match=r"x: weights are not preset v2_40k; they fit v1_32k"):
        _match_preset(state, "x", preset="v2_40k")


def test_metadata_that_contradicts_the_weights_is_refused() -> None:
    state = _meta_state("v1_48k", False, enc_q=False)
    with pytest.raises(CheckpointError, match=r"x: metadata \(sr=40000\) fits none of"):
        _match_preset(state, "x", meta={"sr": "40k"})
    with pytest.raises(CheckpointError, match=r"x: unreadable 'sr' entry 'abc'"):
        _match_preset(state, "x", meta={"sr": "abc"})
    # f0=1 claimed, but the weights have no F0 source module.
    with pytest.raises(CheckpointError, match=r"metadata \(f0=1\) fits none of"):
        _match_preset(_meta_state("v2_40k", False, enc_q=True), "x", meta={"f0": 1})
