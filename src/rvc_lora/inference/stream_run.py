"""``python infer.py mode=stream``: convert a file block by block, as a real-time host feeds it,
and report what real time would see (latency, compute per block, missed deadlines)."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from rvc_lora.audio import load_audio
from rvc_lora.inference.stream import StreamConverter
from rvc_lora.utils.atomic import atomic_write_text


def latency_report(conv: StreamConverter, compute_s: list[float]) -> dict[str, Any]:
    """Figures of a streamed conversion: algorithmic latency and per-block compute time."""
    s = conv.sizes
    block_s = s.block / 100
    ms = sorted(1000 * t for t in compute_s)
    return {
        "block_ms": 10 * s.block,
        "crossfade_ms": 10 * s.crossfade,
        "search_ms": 10 * s.search,
        "lookahead_ms": 10 * s.lookahead,
        "context_ms": 10 * s.extra,
        "algorithmic_latency_ms": round(1000 * s.latency_s, 1),
        "blocks": len(ms),
        "compute_ms": {
            "mean": round(statistics.fmean(ms), 2),
            "median": round(statistics.median(ms), 2),
            "p95": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 2),
            "max": round(ms[-1], 2),
        },
        "realtime_factor": round(statistics.fmean(compute_s) / block_s, 3),
        "missed_deadlines": sum(t > block_s for t in compute_s),
    }


def stream_file(conv: StreamConverter, audio16k: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Push ``audio16k`` block by block (the last block zero-padded, then enough silence to
    flush the latency); returns the output aligned with the input and the report."""
    b = conv.block_samples
    delay = conv.sizes.delay  # frames the output is late
    flush = delay * 160 + b
    tail = flush + (-(len(audio16k) + flush)) % b
    padded = np.concatenate([np.asarray(audio16k, np.float32), np.zeros(tail, np.float32)])
    outputs, compute = [], []
    for i in range(0, len(padded), b):
        t = time.perf_counter()
        outputs.append(conv.push(padded[i : i + b]))
        compute.append(time.perf_counter() - t)
    out = np.concatenate(outputs)
    hop = conv.hop
    start = delay * hop
    out = out[start : start + len(audio16k) // 160 * hop]
    return out, latency_report(conv, compute[: len(audio16k) // b or 1])


def run_stream(cfg: DictConfig, model, trained: DictConfig | None, index_path: Path | None):
    """``mode=stream``: ``cfg.source`` (one file) into ``cfg.output`` plus
    ``<output>.latency.json``."""
    from rvc_lora.inference.pitch import parse_pitch
    from rvc_lora.inference.setup import InferenceError, conversion_setup, write_audio

    source, output = Path(cfg.source), Path(cfg.output)
    if not source.is_file():
        raise InferenceError(f"{source}: mode=stream converts one file; pass source=<audio file>")
    pitch = parse_pitch(cfg.pitch)
    if pitch == "auto":
        raise InferenceError("mode=stream: pitch=auto needs the whole source; pass pitch=N")
    options, pipeline, index = conversion_setup(cfg, model, trained, index_path, pitch=pitch)
    st = cfg.stream
    conv = StreamConverter(
        model, pipeline.encoder, block_s=float(st.block_s), extra_s=float(st.extra_s),
        crossfade_s=float(st.crossfade_s), f0_method=options.f0_method,
        lookahead_s=float(st.lookahead_s), pitch=options.pitch, speaker_id=options.speaker_id,
        seed=int(options.seed or 0), index=index, index_rate=options.index_rate,
        rmvpe=pipeline.rmvpe, fcpe=pipeline.fcpe,
    )  # fmt: skip
    audio, _ = load_audio(source, 16000)
    out, report = stream_file(conv, audio)
    write_audio(output, np.clip(out, -1.0, 1.0), model.config.sr, str(cfg.output_subtype))
    report_path = output.with_name(output.name + ".latency.json")
    atomic_write_text(report_path, json.dumps({"source": source.name, **report}, indent=1) + "\n")
    c = report["compute_ms"]
    print(
        f"streamed {source.name} -> {output} in {report['blocks']} blocks of "
        f"{report['block_ms']} ms: latency {report['algorithmic_latency_ms']} ms, compute "
        f"{c['mean']} ms/block (p95 {c['p95']}), {report['missed_deadlines']} missed deadlines"
    )
    return [output]
