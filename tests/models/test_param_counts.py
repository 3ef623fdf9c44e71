"""Every preset's parameter and key counts equal RVC's own classes (RVC_FACTS.md §1.5)."""

from __future__ import annotations

import pytest
import torch

from rvc_lora.models import build_discriminator, build_synthesizer

# variant: (total, without enc_q, enc_p, dec, enc_q, flow, emb_g, keys, keys without enc_q)
RVC_COUNTS = {
    ("v1_32k", True): (36294338, 27471170, 6404928, 14523010, 8823168, 6515328, 27904, 619, 516),
    ("v1_32k", False): (36225600, 27402432, 6355776, 14503424, 8823168, 6515328, 27904, 606, 503),
    ("v1_40k", True): (36360514, 27439042, 6404928, 14490882, 8921472, 6515328, 27904, 560, 457),
    ("v1_40k", False): (36289088, 27367616, 6355776, 14468608, 8921472, 6515328, 27904, 549, 446),
    ("v1_48k", True): (36400834, 27479362, 6404928, 14531202, 8921472, 6515328, 27904, 619, 516),
    ("v1_48k", False): (36323904, 27402432, 6355776, 14503424, 8921472, 6515328, 27904, 606, 503),
    ("v2_32k", True): (36880706, 28057538, 6503232, 15011074, 8823168, 6515328, 27904, 560, 457),
    ("v2_32k", False): (36813376, 27990208, 6454080, 14992896, 8823168, 6515328, 27904, 549, 446),
    ("v2_40k", True): (36458818, 27537346, 6503232, 14490882, 8921472, 6515328, 27904, 560, 457),
    ("v2_40k", False): (36387392, 27465920, 6454080, 14468608, 8921472, 6515328, 27904, 549, 446),
    ("v2_48k", True): (37638466, 28716994, 6503232, 15670530, 8921472, 6515328, 27904, 560, 457),
    ("v2_48k", False): (37567040, 28645568, 6454080, 15648256, 8921472, 6515328, 27904, 549, 446),
}


def _numel(state, prefix: str = "") -> int:
    return sum(v.numel() for k, v in state.items() if k.startswith(prefix))


@pytest.mark.parametrize(("preset", "f0"), list(RVC_COUNTS), ids=lambda v: str(v))
def test_synthesizer_counts_match_rvc(preset: str, f0: bool) -> None:
    with torch.device("meta"):  # shapes only: no memory for 36M parameters
        state = build_synthesizer(preset, f0).state_dict()
    total, no_q, enc_p, dec, enc_q, flow, emb_g, n_keys, n_keys_no_q = RVC_COUNTS[(preset, f0)]
    assert _numel(state) == total
    assert total - _numel(state, "enc_q.") == no_q
    parts = {p: _numel(state, p + ".") for p in ("enc_p", "dec", "enc_q", "flow", "emb_g")}
    assert parts == {"enc_p": enc_p, "dec": dec, "enc_q": enc_q, "flow": flow, "emb_g": emb_g}
    assert len(state) == n_keys
    assert sum(not k.startswith("enc_q.") for k in state) == n_keys_no_q
    # Legacy weight-norm names, never the parametrization's.
    assert not any("parametrizations" in k for k in state)


@pytest.mark.parametrize(
    ("version", "params", "tensors"), [("v1", 54968286, 129), ("v2", 71410594, 165)]
)
def test_discriminator_counts_match_rvc(version: str, params: int, tensors: int) -> None:
    with torch.device("meta"):
        state = build_discriminator(version).state_dict()
    assert _numel(state) == params
    assert len(state) == tensors
    # DiscriminatorS and one DiscriminatorP, as RVC_FACTS.md §1.5 lists them.
    assert _numel(state, "discriminators.0.") == 5641362
    assert _numel(state, "discriminators.1.") == 8221154
