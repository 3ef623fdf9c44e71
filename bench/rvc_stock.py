"""Stock RVC's offline conversion timed on our weights: the figure our pipeline has to beat.

Issue 17 asks for a whole conversion in at most half of stock RVC's pipeline time on the same
weights and audio (CPU, 2 threads). Stock RVC is release 2.2.231006 of
RVC-Project/Retrieval-based-Voice-Conversion-WebUI, imported from a checkout the user names
(``--rvc-root`` or ``RVC_ROOT``); none of its code is part of this repository.

Both pipelines run identical networks: RVC's ``SynthesizerTrnMs768NSFsid`` gets our synthesizer's
state dict key for key (strict), and RVC's fairseq HuBERT is replaced by our content encoder
behind fairseq's interface, so the timing compares the pipelines, not the weights. The figure
is written to ``results/bench/rvc_reference.json``; ``bench/bench_infer.py`` prints it beside
our RTF (:func:`recorded_reference`).

    python bench/rvc_stock.py --rvc-root DIR [--seconds 10] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import statistics
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch
    from torch import nn

    from rvc_lora.features.hubert import ContentEncoder
    from rvc_lora.inference.pipeline import ConvertOptions
    from rvc_lora.models.synthesizer import Synthesizer

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "bench" / "rvc_reference.json"
RVC_RELEASE = "2.2.231006"
# RVC's fp32 chunking (configs/config.py, RVC_FACTS.md §9.2): the settings of a CPU run.
FP32_CHUNKING = {"x_pad": 1, "x_query": 6, "x_center": 38, "x_max": 41}
# Packages RVC's pipeline imports at module level; the pm path calls only librosa and
# parselmouth, so the others may be stand-ins when not installed.
OPTIONAL_PACKAGES = ("faiss", "librosa", "parselmouth", "pyworld", "torchcrepe")
F0_METHODS = ("pm", "harvest")  # RVC's others need weights (rmvpe, crepe)
_FIELDS: dict[str, tuple[type, ...]] = {
    "rvc_release": (str,), "preset": (str,), "seconds": (int, float), "threads": (int,),
    "rtf": (int, float), "median_s": (int, float), "times": (list,), "date": (str,),
    "command": (str,),
}  # fmt: skip


# -- importing stock RVC ---------------------------------------------------------------------
class _Missing(types.ModuleType):
    """Stand-in for an optional package that is not installed; any use says so."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # import machinery and introspection probe dunders
            raise AttributeError(attr)
        raise ModuleNotFoundError(
            f"stock RVC's pipeline used {self.__name__}.{attr}, but {self.__name__} is not "
            f"installed; bench/rvc_stock.py supports f0 methods {', '.join(F0_METHODS)} with "
            f"no index"
        )


@dataclass(frozen=True)
class Rvc:
    """Stock RVC's two modules, imported from a checkout.

    Attributes:
        root: the checkout (holds ``infer/``).
        models: ``infer.lib.infer_pack.models``.
        pipeline: ``infer.modules.vc.pipeline``.
    """

    root: Path
    models: types.ModuleType
    pipeline: types.ModuleType


@contextlib.contextmanager
def _rvc_imports(root: Path) -> Iterator[None]:
    """Make ``infer`` RVC's package tree for the duration, then put ``sys.modules`` back.

    RVC's ``infer/`` and ``infer/modules/`` have no ``__init__.py`` (namespace packages), and a
    namespace package loses to any plain ``infer`` module on ``sys.path`` (this repository's
    ``infer.py``), so the parent packages are made explicitly. Restoring ``sys.modules`` keeps
    RVC's names from shadowing ours; the imported modules keep their own references.
    """
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "infer"}
    saved_path = list(sys.path)  # RVC's pipeline appends the working directory at import
    try:
        for name in ("infer", "infer.lib", "infer.modules"):
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(root.joinpath(*name.split(".")))]
            sys.modules[name] = pkg
        for name in OPTIONAL_PACKAGES:
            try:
                importlib.import_module(name)
            except ImportError:
                sys.modules[name] = _Missing(name)
        yield
    finally:
        for key, module in list(sys.modules.items()):
            if key.split(".")[0] == "infer" or isinstance(module, _Missing):
                del sys.modules[key]
        sys.modules.update(saved)
        sys.path[:] = saved_path


def load_rvc(rvc_root: str | os.PathLike[str]) -> Rvc:
    """Import RVC's synthesizer and offline-pipeline modules from a checkout of the release."""
    root = Path(rvc_root).expanduser().resolve()
    wanted = [root / "infer" / "lib" / "infer_pack" / "models.py",
              root / "infer" / "modules" / "vc" / "pipeline.py"]  # fmt: skip
    missing = [str(p.relative_to(root)) for p in wanted if not p.is_file()]
    if missing:
        raise SystemExit(
            f"{root}: no {', '.join(missing)}; point --rvc-root (or RVC_ROOT) at a checkout of "
            f"RVC-Project/Retrieval-based-Voice-Conversion-WebUI release {RVC_RELEASE}"
        )
    with _rvc_imports(root):
        models = importlib.import_module("infer.lib.infer_pack.models")
        pipeline = importlib.import_module("infer.modules.vc.pipeline")
    return Rvc(root, models, pipeline)


# -- our networks behind RVC's interfaces ----------------------------------------------------
class FairseqLikeHubert:
    """Our content encoder with the two calls RVC's ``Pipeline.vc`` makes on fairseq's HuBERT.

    Args:
        encoder: :class:`rvc_lora.features.hubert.ContentEncoder`.
    """

    def __init__(self, encoder: ContentEncoder) -> None:
        self.encoder = encoder
        self.final_proj = encoder.final_proj  # v1: RVC applies it to layer 9 itself

    def extract_features(
        self, source: torch.Tensor, padding_mask: torch.Tensor, output_layer: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``source [1, N]`` -> (``[1, T, 768]`` output of layer ``output_layer``, the mask)."""
        if bool(padding_mask.any()):  # RVC passes an all-False mask; ours has no padding path
            raise ValueError(
                "FairseqLikeHubert: a padding mask with padded samples is not supported"
            )
        return self.encoder.layer_output(source, output_layer), padding_mask


@dataclass
class StockRvc:
    """Stock RVC's conversion set up on our weights: its synthesizer and pipeline objects.

    Attributes:
        rvc: the imported modules.
        net_g: RVC's synthesizer holding our weights (eval, fp32, without ``enc_q`` as RVC's
            ``VC.get_vc`` leaves it).
        hubert: our encoder behind fairseq's interface.
        version: ``"v1"`` or ``"v2"``; f0: whether the model takes pitch.
        tgt_sr: the model's sample rate.
    """

    rvc: Rvc
    net_g: nn.Module
    hubert: FairseqLikeHubert
    version: str
    f0: bool
    tgt_sr: int

    @classmethod
    def build(cls, rvc: Rvc, model: Synthesizer, encoder: ContentEncoder) -> StockRvc:
        """RVC's synthesizer class for ``model``'s version/f0, loaded with its state dict (strict)."""
        cfg = model.config
        name = "SynthesizerTrnMs" + ("256" if cfg.version == "v1" else "768") + "NSFsid"
        name += "" if model.f0 else "_nono"
        net_g = getattr(rvc.models, name)(*cfg.to_rvc_list(), is_half=False)
        net_g.load_state_dict(model.state_dict(), strict=True)  # raises on any key/shape mismatch
        del net_g.enc_q  # as VC.get_vc: inference never uses the posterior encoder
        return cls(rvc, net_g.eval().float(), FairseqLikeHubert(encoder), cfg.version,
                   bool(model.f0), int(cfg.sr))  # fmt: skip

    def convert(self, audio16k: np.ndarray, opts: ConvertOptions) -> np.ndarray:
        """RVC's ``VC.vc_single`` after loading: peak limit, then ``Pipeline.pipeline``.

        Args:
            audio16k: ``[N]`` float 16 kHz mono.
            opts: our options, mapped onto RVC's arguments (no index: ``file_index=""``).
        Returns:
            ``[M]`` float32, RVC's int16 output / 32768.
        """
        if opts.f0_method not in F0_METHODS:
            raise ValueError(f"f0_method {opts.f0_method!r}: stock RVC runs here with {F0_METHODS}")
        audio = np.asarray(audio16k, dtype=np.float32)
        peak = np.abs(audio).max() / 0.95
        if peak > 1:
            audio = audio / peak
        config = types.SimpleNamespace(**FP32_CHUNKING, is_half=False, device="cpu")
        pipe = self.rvc.pipeline.Pipeline(self.tgt_sr, config)
        self.rvc.pipeline.cache_harvest_f0.cache_clear()  # RVC caches harvest by file name
        out = pipe.pipeline(
            self.hubert, self.net_g, int(opts.speaker_id), audio, "bench", [0, 0, 0],
            opts.pitch, opts.f0_method, "", opts.index_rate, int(self.f0),
            int(opts.filter_radius), self.tgt_sr, int(opts.resample_sr), opts.rms_mix_rate,
            self.version, opts.protect,
        )  # fmt: skip
        return out.astype(np.float32) / 32768.0


def time_rvc(audio16k: np.ndarray, stock: StockRvc, opts: ConvertOptions | None = None
             ) -> tuple[float, np.ndarray]:  # fmt: skip
    """Seconds of one stock-RVC conversion and its output.

    ``torch.manual_seed(opts.seed)`` comes first (outside the timing), so for audio up to
    ``x_max`` (41 s, one chunk) the prior noise equals that of our pipeline with the same seed.

    Args:
        audio16k: ``[N]`` float 16 kHz mono.
        stock: :meth:`StockRvc.build`'s result.
        opts: default ``ConvertOptions(f0_method="pm", index_rate=0.0)``.
    Returns:
        ``(seconds, [M] float32 output)``.
    """
    import torch

    from rvc_lora.inference.pipeline import ConvertOptions

    opts = opts or ConvertOptions(f0_method="pm", index_rate=0.0)
    if opts.seed is not None:
        torch.manual_seed(opts.seed)
    start = time.perf_counter()
    out = stock.convert(audio16k, opts)
    return time.perf_counter() - start, out


@contextlib.contextmanager
def rvc_rng_order(model: Synthesizer) -> Iterator[None]:
    """Make ``model`` draw random numbers in the order of RVC 2.2.231006's synthesizer.

    That release's ``SineGen`` draws ``torch.rand(B, harmonics)`` (a start phase, which it then
    zeroes for the fundamental) before its noise; ours skips the draw, so with the same seed its
    excitation noise is a different sample. A pre-hook making the same draw lines the two
    streams up, so that what is left of the difference is the pipelines' arithmetic.
    """
    import torch

    source = getattr(model.dec, "m_source", None)
    if source is None:  # no-pitch models have no sine source
        yield
        return

    def draw(mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        torch.rand(args[0].shape[0], mod.dim)  # f0 [B, T]: RVC's rand_ini [B, harmonics]
        # returns None: a pre-hook's return value would replace the arguments

    handle = source.l_sin_gen.register_forward_pre_hook(draw)
    try:
        yield
    finally:
        handle.remove()


def cross_check(
    stock: StockRvc, model: Synthesizer, encoder: ContentEncoder, audio16k: np.ndarray,
    opts: ConvertOptions,
) -> dict[str, float]:  # fmt: skip
    """Max |RVC - ours| over the output, seeded alike; audio up to 41 s (one chunk).

    Returns:
        ``same_seed``: both pipelines as they are; ``rvc_rng_order``: ours under
        :func:`rvc_rng_order` (the arithmetic alone; RVC's int16 output step is 3.1e-5).
    """
    from rvc_lora.inference.pipeline import ConversionPipeline

    _, theirs = time_rvc(audio16k, stock, opts)
    pipe = ConversionPipeline(encoder, **FP32_CHUNKING)
    diffs = {}
    for label, ctx in (
        ("same_seed", contextlib.nullcontext()),
        ("rvc_rng_order", rvc_rng_order(model)),
    ):
        with ctx:
            ours, _ = pipe.convert(model, audio16k, opts)
        if theirs.shape != ours.shape:
            raise RuntimeError(f"RVC gave {theirs.shape[0]} samples, ours {ours.shape[0]}")
        diffs[label] = float(np.abs(theirs - ours).max())
    return diffs


def build_networks(preset: str, seed: int = 0) -> tuple[Synthesizer, ContentEncoder]:
    """Our synthesizer (f0) and HuBERT-Base content encoder with seeded random weights."""
    import torch
    from transformers import HubertConfig

    from rvc_lora.features.hubert import ContentEncoder
    from rvc_lora.models import build_synthesizer

    torch.manual_seed(seed)
    encoder = ContentEncoder(HubertConfig(classifier_proj_size=256))
    return build_synthesizer(preset, True).eval(), encoder


# -- the recorded figure ---------------------------------------------------------------------
def recorded_reference(path: str | os.PathLike[str] = REFERENCE) -> dict[str, Any] | None:
    """The stock-RVC figure written by this script, or None when it was never measured.

    Raises:
        ValueError: the file is not JSON or lacks a field (or has one of the wrong type, or a
            non-positive RTF); the message names the file and the command that rewrites it.
    """
    path = Path(path)
    if not path.is_file():
        return None
    fix = "rerun `python bench/rvc_stock.py --rvc-root DIR` to rewrite it"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON file ({exc}); {fix}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(record).__name__}; {fix}")
    for key, types_ in _FIELDS.items():
        if key not in record:
            raise ValueError(f"{path}: no {key!r} field; {fix}")
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, types_):
            expected = " or ".join(t.__name__ for t in types_)
            raise ValueError(f"{path}: {key!r} is {value!r}, expected {expected}; {fix}")
    if not (math.isfinite(record["rtf"]) and record["rtf"] > 0):
        raise ValueError(f"{path}: 'rtf' is {record['rtf']!r}, not a positive number; {fix}")
    return record


# -- command line ----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rvc-root", default=os.environ.get("RVC_ROOT"),
                    help=f"checkout of RVC WebUI release {RVC_RELEASE} (default: $RVC_ROOT)")  # fmt: skip
    ap.add_argument("--preset", default="v2_40k")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REFERENCE)
    args = ap.parse_args(argv)
    if not args.rvc_root:
        ap.error("give --rvc-root DIR or set RVC_ROOT")

    import torch
    from bench_infer import voice_like  # here, not at the top: bench_infer imports this file

    from rvc_lora.inference.pipeline import ConvertOptions
    from rvc_lora.report.provenance import stamp, write_json

    start_all = time.perf_counter()
    torch.set_num_threads(args.threads)
    rvc = load_rvc(args.rvc_root)
    model, encoder = build_networks(args.preset)
    stock = StockRvc.build(rvc, model, encoder)
    audio = voice_like(args.seconds)
    opts = ConvertOptions(f0_method="pm", index_rate=0.0)
    print(
        f"stock RVC {RVC_RELEASE} pipeline on our weights: preset {args.preset} (random), "
        f"HuBERT-Base (random), f0 pm, no index, {args.seconds:g} s audio, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    time_rvc(audio, stock, opts)  # warm-up
    diffs = cross_check(stock, model, encoder, audio, opts)
    print(f"max |RVC - ours| output difference: {diffs['rvc_rng_order']:.2e} with RVC's order "
          f"of random draws, {diffs['same_seed']:.2e} with the same seed only (RVC's SineGen "
          f"draws one more random start phase before its noise)")  # fmt: skip
    times = [time_rvc(audio, stock, opts)[0] for _ in range(args.repeats)]
    median = statistics.median(times)
    rtf = median / args.seconds
    print(f"stock RVC RTF {rtf:.3f}  (median of {len(times)}: {median:.2f} s; "
          f"min {min(times):.2f}, max {max(times):.2f})")  # fmt: skip
    cmd = [sys.executable, "bench/rvc_stock.py", *(argv if argv is not None else sys.argv[1:])]
    record = {
        **stamp(_without_root(cmd), time.perf_counter() - start_all),
        "rvc_release": RVC_RELEASE, "preset": args.preset, "seconds": args.seconds,
        "threads": torch.get_num_threads(), "rtf": round(rtf, 4), "median_s": round(median, 3),
        "times": [round(t, 3) for t in times], "max_abs_diff_vs_ours": diffs["rvc_rng_order"],
        "max_abs_diff_vs_ours_same_seed": diffs["same_seed"],
    }  # fmt: skip
    print(f"wrote {write_json(args.out, record)}")
    return 0


def _without_root(cmd: list[str]) -> list[str]:
    """The command with the RVC checkout's path written as ``DIR`` (no machine paths in files)."""
    out = []
    for i, arg in enumerate(cmd):
        if i > 0 and cmd[i - 1] == "--rvc-root":
            arg = "DIR"
        elif arg.startswith("--rvc-root="):
            arg = "--rvc-root=DIR"
        out.append(arg)
    return out


if __name__ == "__main__":
    sys.exit(main())
