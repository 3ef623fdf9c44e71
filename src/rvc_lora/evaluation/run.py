"""``python eval.py run_dir=...``: score a trained voice on held-out utterances.

Two tasks per held-out target utterance (``eval_dir``):

- reconstruction: the utterance itself converted into the voice (pitch 0) and scored against
  itself, frame by frame where the metric allows: MCD, F0 RMSE / correlation / V/UV error,
  spectral convergence, log-mel L1, PESQ, SECS against the target's reference set;
- conversion: the same sentence from ``source_dir`` converted with ``pitch=auto`` and scored
  against the target's utterance along a DTW path: MCD, F0 (after the transposition), SECS
  against the target's reference set and against the source's own audio.

SECS uses the mean speaker embedding of ``reference_dir`` (the target's training audio). The
results go to ``eval.json`` in the run dir: the report's keys and the ``recon_*`` / ``conv_*``
means (:mod:`rvc_lora.evaluation.summary`), ``conv_pitch_shift`` (mean semitones chosen by
``pitch=auto``), counts (``n_utterances``, ``n_conversions``, ``n_unpaired``, ``n_skipped``),
``rtf`` (conversion seconds per second of input audio over both tasks, scoring excluded),
``eval_time_s`` and the settings used.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from rvc_lora.audio import AudioError, load_audio
from rvc_lora.evaluation.corpus import EvalError, Utterance, audio_files, pair_utterances
from rvc_lora.evaluation.summary import finite_or_none, flat_summary
from rvc_lora.evaluation.voice import Voice, load_voice, resolve_artifact
from rvc_lora.inference.pitch import parse_pitch
from rvc_lora.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

SR_IN = 16000  # the pipeline's input rate


def target_embedding(reference_dir: str | None, limit: int | None) -> np.ndarray | None:
    """Mean speaker embedding of the reference set (None: each utterance is its own)."""
    if reference_dir is None:
        return None
    from rvc_lora.metrics import reference_embedding

    files = audio_files(reference_dir, "reference_dir")[:limit]
    wavs = [load_audio(f, SR_IN)[0] for f in files]
    log.info("target reference: %d files from %s", len(wavs), reference_dir)
    return reference_embedding(wavs, SR_IN)


def score_utterance(
    voice: Voice,
    utt: Utterance,
    embedding: np.ndarray | None,
    clock: dict[str, float],
    *,
    pitch: float | str = "auto",
    pesq: bool = True,
    f0_method: str = "pm",
    f0_models: dict[str, Any] | None = None,
) -> tuple[dict[str, float], dict[str, float] | None]:
    """Reconstruction scores and (with a parallel source) conversion scores of one utterance.

    Args:
        embedding: the target's speaker embedding ``[256]`` (None: the reference utterance's).
        clock: ``convert_s`` and ``audio_s`` are added to (for the real-time factor).
        pitch: the conversion's transposition, semitones or ``"auto"``.
        pesq: score PESQ on the reconstruction; f0_method: F0 tracker of the metrics.
        f0_models: the tracker's loaded network for ``fcpe`` / ``rmvpe`` (loaded once per run).
    """
    from rvc_lora.metrics import score_pair

    target16k, _ = load_audio(utt.target, SR_IN)
    start = time.perf_counter()
    out, sr, _ = voice.convert(target16k)
    clock["convert_s"] += time.perf_counter() - start
    clock["audio_s"] += len(target16k) / SR_IN
    reference, _ = load_audio(utt.target, sr)
    n = min(len(out), len(reference))  # RVC drops up to 2 hops per chunk: same frames from here
    recon = score_pair(
        out[:n], reference[:n], sr, target_embedding=embedding, pesq=pesq, time_aligned=True,
        f0_method=f0_method, f0_models=f0_models,
    )  # fmt: skip
    if utt.source is None:
        return recon, None
    source16k, _ = load_audio(utt.source, SR_IN)
    start = time.perf_counter()
    out, sr, shift = voice.convert(source16k, pitch=pitch)
    clock["convert_s"] += time.perf_counter() - start
    clock["audio_s"] += len(source16k) / SR_IN
    conv = score_pair(
        out, reference, sr, source=load_audio(utt.source, sr)[0], target_embedding=embedding,
        time_aligned=False, f0_method=f0_method, f0_models=f0_models,
    )  # fmt: skip
    conv["pitch_shift"] = float(shift) if shift is not None else math.nan
    return recon, conv


def metric_f0_tracker(cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """``(method, models)``: the F0 metrics' tracker (``metric_f0_method``) and, for ``fcpe`` or
    ``rmvpe``, its network, loaded once from ``features.fcpe_path`` / ``features.rmvpe_path``.

    Raises:
        EvalError: an unknown method.
        CheckpointError: the network's weights are missing or unreadable.
    """
    from rvc_lora.features.f0 import F0_METHODS, network_f0_models

    method = str(cfg.metric_f0_method)
    if method not in F0_METHODS:
        raise EvalError(
            f"metric_f0_method={method}: unknown; choose one of {', '.join(F0_METHODS)}"
        )
    models = network_f0_models(
        method,
        rmvpe_path=cfg.features.get("rmvpe_path") or "models/rmvpe.pt",
        fcpe_path=cfg.features.get("fcpe_path") or "models/fcpe_c_v001.pt",
    )
    return method, models


def _progress(items: list, enabled: bool):
    if not enabled:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description="evaluating", transient=True)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate the voice; writes and returns the flat ``eval.json`` dict."""
    start_all = time.perf_counter()
    artifact, run_dir = resolve_artifact(cfg.get("run_dir"), cfg.get("ckpt"))
    utterances = pair_utterances(cfg.eval_dir, cfg.get("source_dir"))
    if cfg.get("max_utterances"):
        utterances = utterances[: int(cfg.max_utterances)]
    notes = [
        f"{u.target.name}: no parallel file in {cfg.source_dir}; conversion skipped"
        for u in utterances
        if u.source is None and cfg.get("source_dir")
    ]
    for note in notes:
        log.warning("%s", note)
    pitch = parse_pitch(cfg.conversion_pitch)
    voice = load_voice(cfg, artifact, run_dir)
    output = Path(cfg.output) if cfg.get("output") else voice.run_dir / "eval.json"
    converting = any(u.source is not None for u in utterances)
    if converting and pitch == "auto" and voice.model.f0 and voice.median_hz is None:
        raise EvalError(
            f"{voice.artifact}: conversion_pitch=auto needs the voice's median F0 "
            f"(voice_f0_median_hz in its run_info.json), which this voice does not record (an "
            f"RVC .pth or a run trained before it was recorded); pass conversion_pitch=N "
            f"(semitones), or source_dir=null for reconstruction only"
        )
    embedding = target_embedding(cfg.get("reference_dir"), cfg.get("max_references"))
    metric_f0, metric_models = metric_f0_tracker(cfg)

    recon, conv, skipped = [], [], []
    clock = {"convert_s": 0.0, "audio_s": 0.0}
    for utt in _progress(utterances, enabled=bool(cfg.progress) and len(utterances) > 1):
        try:
            r, c = score_utterance(
                voice, utt, embedding, clock, pitch=pitch, pesq=bool(cfg.pesq),
                f0_method=metric_f0, f0_models=metric_models,
            )  # fmt: skip
        except AudioError as exc:  # an unreadable file loses one utterance, not the run
            skipped.append(str(exc))
            log.warning("skipped %s", exc)
            continue
        recon.append(r)
        if c is not None:
            conv.append(c)
        log.info("%s: recon %s; conv %s", utt.name, _brief(r), _brief(c))
    if not recon:
        raise EvalError(f"eval_dir={cfg.eval_dir}: no utterance could be scored ({skipped[0]})")

    result: dict[str, Any] = {
        **flat_summary(recon, conv),
        "n_utterances": len(recon),
        "n_conversions": len(conv),
        "n_skipped": len(skipped),  # unreadable files
        "n_unpaired": len(notes),  # no parallel source file: reconstruction only
        "rtf": clock["convert_s"] / clock["audio_s"],
        "eval_time_s": time.perf_counter() - start_all,
        "artifact": str(voice.artifact),
        "index": str(voice.index_path) if voice.index_path else None,
        "index_rate": voice.options.index_rate if voice.index is not None else 0.0,
        "f0_method": voice.options.f0_method,
        "metric_f0_method": metric_f0,
        "conversion_pitch": str(pitch),
        "voice_f0_median_hz": voice.median_hz,
        "eval_dir": str(cfg.eval_dir),
        "source_dir": str(cfg.source_dir) if cfg.get("source_dir") else None,
        "reference_dir": str(cfg.reference_dir) if cfg.get("reference_dir") else None,
    }
    result = {k: finite_or_none(v) for k, v in result.items()}
    atomic_write_text(output, json.dumps(result, indent=1, sort_keys=True) + "\n")
    _print_summary(result, output, notes + skipped)
    return result


def _brief(scores: dict[str, float] | None) -> str:
    if scores is None:
        return "-"
    keys = ("mcd_db", "f0_rmse_cents", "secs_target", "pesq", "pitch_shift")
    return " ".join(f"{k}={scores[k]:.3g}" for k in keys if k in scores)


def _print_summary(result: dict[str, Any], output: Path, notes: list[str]) -> None:
    def fmt(key: str) -> str:
        value = result.get(key)
        return "n/a" if value is None else f"{value:.3f}"

    print(
        f"{result['headline']}: MCD {fmt('mcd_db')} dB, F0 RMSE {fmt('f0_rmse_cents')} cents, "
        f"SECS target {fmt('secs_target')} / source {fmt('secs_source')}; reconstruction: "
        f"MCD {fmt('recon_mcd_db')} dB, PESQ {fmt('pesq')}, log-mel L1 {fmt('log_mel_l1')}; "
        f"{result['n_utterances']} utterances, {result['n_conversions']} conversions, "
        f"RTF {fmt('rtf')}"
    )
    if notes:
        print(f"{len(notes)} skipped:")
        for note in notes:
            print(f"  {note}")
    print(f"wrote {output}")
