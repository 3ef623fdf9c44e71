"""bench/rvc_stock.py without an RVC checkout: the recorded figure, the import fence, the RNG order.

The recorded figure is what ``bench/bench_infer.py`` prints beside ours, so a malformed file
must be refused by name rather than printed as a wrong number; the import fence must leave
``sys.modules`` as it found it (this repository has its own ``infer`` module).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from rvc_lora.models import build_synthesizer
from rvc_lora.report.provenance import stamp, write_json

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load():
    spec = importlib.util.spec_from_file_location("rvc_stock", BENCH / "rvc_stock.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["rvc_stock"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


rvc_stock = _load()


def _record(**changes) -> dict:
    rec = {
        **stamp(["python", "bench/rvc_stock.py", "--rvc-root", "DIR"], 12.0),
        "rvc_release": "2.2.231006", "preset": "v2_40k", "seconds": 10.0, "threads": 2,
        "rtf": 0.8, "median_s": 8.0, "times": [8.1, 8.0, 7.9], "max_abs_diff_vs_ours": 3e-5,
    }  # fmt: skip
    rec.update(changes)
    return rec


def test_recorded_reference_reads_back_what_was_written(tmp_path):
    path = tmp_path / "rvc_reference.json"
    write_json(path, _record())
    assert rvc_stock.recorded_reference(path) == json.loads(path.read_text())
    assert rvc_stock.recorded_reference(path)["rtf"] == 0.8


def test_recorded_reference_is_none_when_never_measured(tmp_path):
    assert rvc_stock.recorded_reference(tmp_path / "absent.json") is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "not a JSON file"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({k: v for k, v in _record().items() if k != "rtf"}), "no 'rtf' field"),
        (json.dumps(_record(rtf="0.8")), "'rtf' is '0.8', expected int or float"),
        (json.dumps(_record(rtf=-1.0)), "not a positive number"),
        (json.dumps(_record(rtf=0)), "not a positive number"),
        (json.dumps(_record(threads=True)), "'threads' is True"),
        (json.dumps(_record(times="8.0")), "'times'"),
    ],
)
def test_recorded_reference_refuses_a_malformed_file_by_name(tmp_path, text, says):
    path = tmp_path / "rvc_reference.json"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        rvc_stock.recorded_reference(path)
    assert says in str(err.value)
    assert str(path) in str(err.value) and "bench/rvc_stock.py --rvc-root" in str(err.value)


def test_recorded_reference_refuses_nan(tmp_path):
    path = tmp_path / "rvc_reference.json"
    path.write_text(json.dumps(_record(rtf=float("nan"))))  # json writes NaN, reads it back
    with pytest.raises(ValueError, match="not a positive number"):
        rvc_stock.recorded_reference(path)


def test_the_shipped_reference_is_well_formed():
    record = rvc_stock.recorded_reference()
    if record is None:
        pytest.skip("results/bench/rvc_reference.json not written yet")
    assert record["rvc_release"] == rvc_stock.RVC_RELEASE
    assert "--rvc-root DIR" in record["command"]  # no machine path in the repository


def test_command_hides_the_rvc_checkout_path():
    cmd = ["python", "bench/rvc_stock.py", "--rvc-root", "/home/u/rvc", "--seconds", "5"]
    assert rvc_stock._without_root(cmd)[3] == "DIR"
    assert rvc_stock._without_root(["p", "--rvc-root=/x/y"]) == ["p", "--rvc-root=DIR"]


def _fake_rvc(root: Path) -> Path:
    """The two module paths of an RVC checkout, holding stand-ins that import like RVC's."""
    (root / "infer" / "lib" / "infer_pack").mkdir(parents=True)
    (root / "infer" / "modules" / "vc").mkdir(parents=True)
    (root / "infer" / "lib" / "infer_pack" / "__init__.py").write_text("")
    (root / "infer" / "lib" / "infer_pack" / "models.py").write_text("MARK = 'models'\n")
    (root / "infer" / "modules" / "vc" / "__init__.py").write_text("")
    (root / "infer" / "modules" / "vc" / "pipeline.py").write_text(
        "import os, sys\nimport no_such_package_for_rvc_stock as absent\n"
        "from infer.lib.infer_pack import models\nsys.path.append(os.getcwd())\nMARK = 'pipeline'\n"
    )
    return root


def test_load_rvc_imports_the_checkout_and_leaves_sys_modules_as_it_was(tmp_path, monkeypatch):
    # One present and one absent package (importing the real faiss or librosa takes seconds).
    monkeypatch.setattr(rvc_stock, "OPTIONAL_PACKAGES", ("json", "no_such_package_for_rvc_stock"))
    ours = sys.modules.get("infer")
    path_before = list(sys.path)
    rvc = rvc_stock.load_rvc(_fake_rvc(tmp_path))
    assert (rvc.models.MARK, rvc.pipeline.MARK) == ("models", "pipeline")
    assert rvc.pipeline.models is rvc.models
    assert sys.modules.get("infer") is ours
    assert not any(k.startswith("infer.") for k in sys.modules)
    assert "no_such_package_for_rvc_stock" not in sys.modules
    assert sys.path == path_before
    with pytest.raises(ModuleNotFoundError, match="no_such_package_for_rvc_stock.anything"):
        rvc.pipeline.absent.anything()  # a missing package fails where it is used, by name
    with pytest.raises(AttributeError):
        rvc.pipeline.absent.__file__  # noqa: B018 (introspection sees a plain module)


def test_load_rvc_names_the_release_for_a_wrong_root(tmp_path):
    with pytest.raises(SystemExit, match="2.2.231006"):
        rvc_stock.load_rvc(tmp_path)


def _infer(model, seed: int) -> torch.Tensor:
    t = 8
    gen = torch.Generator().manual_seed(1)
    phone = torch.randn(1, t, model.config.feature_dim, generator=gen)
    pitch = torch.randint(1, 255, (1, t), generator=gen)
    pitchf = torch.where(torch.arange(t) < 4, 150.0, 0.0).unsqueeze(0)
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.infer(phone, torch.tensor([t]), pitch, pitchf, torch.tensor([0]))[0]


def test_rvc_rng_order_draws_one_start_phase_before_the_noise_and_is_undone():
    model = build_synthesizer("tiny", True).eval()
    plain = _infer(model, 0)
    seen = []

    def spy(mod, args):  # what the source is called with, after rvc_rng_order's own hook
        seen.append(args[0].shape)

    with rvc_stock.rvc_rng_order(model):
        handle = model.dec.m_source.l_sin_gen.register_forward_pre_hook(spy)
        try:
            shifted = _infer(model, 0)
        finally:
            handle.remove()
    assert seen == [torch.Size([1, 8])]  # the hook left f0 [B, T] in place
    assert not torch.equal(plain, shifted)  # another noise sample: the draw happened
    assert torch.equal(_infer(model, 0), plain)  # and the hook is gone afterwards


def test_rvc_rng_order_passes_through_a_model_without_pitch():
    model = build_synthesizer("tiny", False).eval()
    with rvc_stock.rvc_rng_order(model):
        pass
