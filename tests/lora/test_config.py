"""LoraConfig validation, presets and JSON round trip."""

from __future__ import annotations

import json
import re

import pytest

from rvc_lora.lora import PRESETS, LoraConfig, LoraError, preset_targets
from rvc_lora.utils.errors import RvcLoraError


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rank": 0}, "rank"),
        ({"rank": -2}, "rank"),
        ({"rank": 2.5}, "rank"),
        ({"rank": True}, "rank"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"targets": ["dec\\.ups\\.(\\d+"]}, "targets"),
        ({"targets": []}, "targets"),
        ({"targets": "dec"}, "targets"),
        ({"exclude": ["["]}, "exclude"),
        ({"extra_trainable": ["emb_g\\.weight("]}, "extra_trainable"),
        ({"rank_pattern": {"dec.*": 0}}, "rank_pattern"),
        ({"rank_pattern": {"(": 4}}, "rank_pattern"),
        ({"alpha_pattern": {"dec.*": -3}}, "alpha_pattern"),
        ({"rank_pattern": "dec.*"}, "rank_pattern"),
        ({"rank_pattern": [["dec.*", 4, 1]]}, "rank_pattern"),
        ({"rank_pattern": [["dec.*", "4"]]}, "rank_pattern"),
        ({"rank_pattern": [[4, "dec.*"]]}, "rank_pattern"),
        ({"rank_pattern": [["a", 2], ["a", 4]]}, "rank_pattern"),
        ({"alpha_pattern": [["dec.*", float("inf")]]}, "alpha_pattern"),
        ({"alpha_pattern": {"dec.*": None}}, "alpha_pattern"),
        ({"targets": ["((.|.)*)*X"]}, "targets"),
        ({"targets": ["(a+)+"]}, "targets"),
        ({"exclude": [".*" * 5]}, "exclude"),
        ({"rank_pattern": [["(xa|x)*z", 4]]}, "rank_pattern"),
        ({"targets": ["a"] * 1001}, "targets"),
        ({"use_dora": "yes"}, "use_dora"),
        ({"use_dora": True, "dropout": 0.1}, "dropout"),
        ({"preset": "everything"}, "preset"),
    ],
)
def test_invalid_config_names_the_field(kwargs, field):
    if "preset" not in kwargs:
        kwargs.setdefault("targets", ["x"])
    with pytest.raises(LoraError) as err:
        LoraConfig(**kwargs)
    msg = str(err.value)
    assert msg.startswith(field)  # the message leads with the field to fix
    assert "\n" not in msg
    assert isinstance(err.value, ValueError) and isinstance(err.value, RvcLoraError)


def test_no_targets_and_no_preset_is_refused():
    with pytest.raises(LoraError, match="targets"):
        LoraConfig()


def test_presets_nest_and_fill_targets_and_extras():
    dec, dec_flow, every = (preset_targets(n) for n in ("decoder", "decoder_flow", "all"))
    assert dec == [r"dec\.ups\.\d+", r"dec\.resblocks\.\d+\.convs[12]\.\d+"]
    assert dec_flow[: len(dec)] == dec and every[: len(dec_flow)] == dec_flow
    assert len(every) == len(dec_flow) + 2
    assert re.fullmatch(dec_flow[-1], "flow.flows.6.enc.res_skip_layers.2")
    assert not any(re.fullmatch(p, "flow.flows.0.enc.cond_layer") for p in dec_flow)
    assert re.fullmatch(every[-2], "enc_p.encoder.attn_layers.5.conv_o")
    cfg = LoraConfig(preset="decoder_flow")
    assert cfg.targets == dec_flow and cfg.extra_trainable == [r"emb_g\.weight"]
    assert LoraConfig(preset="all", extra_trainable=[]).extra_trainable == []
    assert set(PRESETS) == {"decoder", "decoder_flow", "all"}
    with pytest.raises(LoraError, match="preset"):
        LoraConfig(preset="decoder", targets=["dec\\.conv_pre"])


def test_json_round_trip_and_unknown_keys():
    cfg = LoraConfig(
        rank=4,
        alpha=8,
        dropout=0.1,
        use_rslora=True,
        preset="all",
        exclude=[r"dec\.ups\.0"],
        rank_pattern={r"dec\.ups\.\d+": 16},
        alpha_pattern={r"dec\..*": 4.0},
    )
    again = LoraConfig.from_dict(json.loads(json.dumps(cfg.to_dict(), sort_keys=True)))
    assert again == cfg and again.to_dict() == cfg.to_dict()
    assert cfg.to_dict()["rank_pattern"] == [[r"dec\.ups\.\d+", 16]]
    with pytest.raises(LoraError, match="unknown keys"):
        LoraConfig.from_dict({**cfg.to_dict(), "lr": 1e-4})


def test_per_module_rank_alpha_first_match_wins():
    cfg = LoraConfig(
        rank=8,
        alpha=16,
        targets=["a.*"],
        rank_pattern={r"a\.1": 2, r"a\.\d": 4},
        alpha_pattern={r"a\.\d": 1.0},
    )
    assert (cfg.rank_for("a.1"), cfg.rank_for("a.2"), cfg.rank_for("a.10")) == (2, 4, 8)
    assert (cfg.scale_for("a.1"), cfg.scale_for("a.2"), cfg.scale_for("a.10")) == (0.5, 0.25, 2.0)
    rs = LoraConfig(rank=16, alpha=8, targets=["a"], use_rslora=True)
    assert rs.scale_for("a") == pytest.approx(2.0)


def test_patterns_are_ordered_pairs_that_survive_sorted_json():
    # Not alphabetical: a sorted mapping would put `a\..*` first and give a.1 rank 4.
    given = {r"a\.1": 2, r"a\..*": 4}
    cfg = LoraConfig(targets=["a.*"], rank_pattern=given, alpha_pattern={r"a\.1": 1.0, r"a.*": 8})
    assert cfg.rank_pattern == [(r"a\.1", 2), (r"a\..*", 4)]
    assert cfg.alpha_pattern == [(r"a\.1", 1.0), ("a.*", 8.0)]
    assert cfg.to_dict()["rank_pattern"] == [[r"a\.1", 2], [r"a\..*", 4]]
    again = LoraConfig.from_dict(json.loads(json.dumps(cfg.to_dict(), sort_keys=True)))
    assert again == cfg
    assert (again.rank_for("a.1"), again.rank_for("a.2"), again.scale_for("a.1")) == (2, 4, 0.5)
    pairs = LoraConfig(targets=["a.*"], rank_pattern=[(r"a\.1", 2), [r"a\..*", 4]])
    assert pairs.rank_pattern == cfg.rank_pattern
    # Order is part of the config: the same pairs reversed are another config.
    assert LoraConfig(targets=["a.*"], rank_pattern=dict(reversed(given.items()))) != pairs


def test_patterns_that_could_hang_the_matcher_are_refused_quickly():
    # From an untrusted adapter file: nested repetition backtracks exponentially (this one
    # does not finish on a 14-character name), many .* polynomially.
    with pytest.raises(LoraError, match=r"targets\[0\]: .*nested repetition"):
        LoraConfig(targets=["((.|.)*)*X"])
    with pytest.raises(LoraError, match=r"exclude\[0\]: .* 5 open-ended repeats; at most 4"):
        LoraConfig(targets=["a"], exclude=[".*" * 5])
    # What real configs use stays allowed.
    every = preset_targets("all") + [r"dec\..*", r"(a|b)\.\d+", ".*" * 4, r"x(\.\d)?"]
    assert LoraConfig(targets=every, rank_pattern={r"dec\.ups\..*": 4}).targets == every
