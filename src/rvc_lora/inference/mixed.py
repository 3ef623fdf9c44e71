"""Mixed-voice batches on one base: each row of a batch converts with its own adapter.

:func:`infer_mixed` is ``Synthesizer.infer`` over a padded batch in which row i uses voice i
(an adapter of a :class:`~rvc_lora.inference.voices.VoiceBank`, or None for the base). The
adapters' A/B are gathered per row (:mod:`rvc_lora.lora.batched`) and the decoder is masked per
row (``row_masks``), so a row's output is what converting it alone with its voice merged gives,
whatever else is in the batch.

:func:`convert_batch` runs whole conversions (F0, content features, retrieval, protect per
item, as :class:`~rvc_lora.inference.pipeline.ConversionPipeline` does) and synthesizes every
chunk of every item in mixed batches. Its ``strategy`` chooses how: ``rows`` (those mixed
batches), ``voices`` (voice by voice, each merged in turn, one chunk at a time on the fast
decoder) or ``auto``: ``rows`` on CUDA, ``voices`` elsewhere, because on a CPU a batch is no
faster than its rows one at a time and the per-row branches only add work (``bench_mixed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from rvc_lora.inference.pipeline import seeded
from rvc_lora.lora import LoraError
from rvc_lora.lora.batched import RowAdapter, row_adapters
from rvc_lora.models.synthesizer import InferNoise, draw_infer_noise

if TYPE_CHECKING:
    from rvc_lora.features.index import FeatureIndex
    from rvc_lora.inference.pipeline import ConversionPipeline, ConvertOptions, SynthJob


@dataclass
class ConvertItem:
    """One request of a mixed batch: 16 kHz mono audio, the voice (None = the base), options
    and the voice's retrieval index."""

    audio: np.ndarray
    voice: str | None
    options: ConvertOptions | None = None
    index: FeatureIndex | None = None


# ``bank`` is a VoiceBank (voices.py imports this module, so it is not imported here).


def _rows(bank: Any, voices: Sequence[str | None]):
    """Per-module row adapters and per-row speaker tables for ``voices``."""
    chosen = {name: bank._get(name) for name in dict.fromkeys(v for v in voices if v is not None)}
    for name, voice in chosen.items():
        if voice.config.use_dora:
            raise LoraError(
                f"voice {name!r} is DoRA: its per-channel norm of the merged weight has no "
                f"per-row form; convert it on its own (bank.use({name!r}))"
            )
    modules = sorted({m for v in chosen.values() for m in v.matched})
    rows = {
        m: [
            RowAdapter(v.tensors[f"{m}.lora_A"], v.tensors[f"{m}.lora_B"], v.scale(m))
            if v is not None and m in v.matched
            else None
            for v in map(chosen.get, voices)  # None (the base) is no key: no adapter
        ]
        for m in modules
    }
    embeddings = {}
    for extra in sorted({e for v in chosen.values() for e in v.extras}):
        module_name, _, attr = extra.rpartition(".")
        if attr != "weight" or not isinstance(bank.model.get_submodule(module_name), nn.Embedding):
            raise LoraError(
                f"extra tensor {extra!r} has no per-row form (only embedding tables do); "
                "convert these voices one at a time"
            )
        base = bank._base_value(extra)
        embeddings[module_name] = [
            chosen[n].tensors[extra] if n is not None and extra in chosen[n].extras else base
            for n in voices
        ]
    return rows, embeddings


@torch.no_grad()
def infer_mixed(
    bank: Any,
    phone: torch.Tensor,
    lengths: torch.Tensor,
    pitch: torch.Tensor | None,
    pitchf: torch.Tensor | None,
    sid: torch.Tensor | None,
    voices: Sequence[str | None],
    noise: InferNoise | None = None,
):
    """``Synthesizer.infer``'s arguments and result, row i computed with voice ``voices[i]``.

    Samples past a row's length are zeros. The bank's active voice is the same afterwards.
    """
    if len(voices) != phone.shape[0]:
        raise LoraError(f"{len(voices)} voices for a batch of {phone.shape[0]} rows")
    rows, embeddings = _rows(bank, voices)
    with bank.keep_active():
        model = bank.use(None)  # the base computes; the rows add their own adapters
        with row_adapters(model, rows, embeddings):
            return model.infer(
                phone, lengths, pitch, pitchf, sid, fast=False, noise=noise, row_masks=True
            )


def job_noise(model, job: SynthJob) -> InferNoise:
    """The noise a chunk's synthesis draws when run alone (seeded as the pipeline seeds it)."""
    with seeded(job.seed, job.phone.device):
        return draw_infer_noise(model, 1, job.phone.shape[1], device=job.phone.device)


def synthesize_mixed(
    bank: Any, jobs: Sequence[SynthJob], voices: Sequence[str | None], max_rows: int = 8
) -> list[np.ndarray]:
    """Each job's ``[T * hop]`` audio, synthesized ``max_rows`` jobs per mixed batch (longest
    first, so rows of similar length share a batch and padding stays small)."""
    model = bank.model
    hop = model.config.hop_length
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].phone.shape[1])
    outputs: list[np.ndarray | None] = [None] * len(jobs)
    for start in range(0, len(order), max_rows):
        batch = order[start : start + max_rows]
        t = max(jobs[i].phone.shape[1] for i in batch)
        phone = torch.cat([_pad(jobs[i].phone, t, 1) for i in batch])
        lengths = torch.cat([jobs[i].lengths for i in batch])
        sid = torch.cat([jobs[i].sid for i in batch])
        pitch = pitchf = None
        if model.f0:
            pitch = torch.cat([_pad(jobs[i].pitch, t, 1) for i in batch])
            pitchf = torch.cat([_pad(jobs[i].pitchf, t, 1) for i in batch])
        drawn = [job_noise(model, jobs[i]) for i in batch]
        noise = InferNoise(
            torch.cat([_pad(n.prior, t, 2) for n in drawn]),
            torch.cat([_pad(n.source, t * hop, 1) for n in drawn]) if model.f0 else None,
        )
        audio = infer_mixed(
            bank, phone, lengths, pitch, pitchf, sid, [voices[i] for i in batch], noise
        )[0]
        for row, i in enumerate(batch):
            outputs[i] = audio[row, 0, : jobs[i].phone.shape[1] * hop].float().cpu().numpy()
    return outputs  # type: ignore[return-value]


def _pad(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Zero-pad ``x`` along ``dim`` to ``size``."""
    extra = size - x.shape[dim]
    if extra == 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


STRATEGIES = ("auto", "rows", "voices")


def resolve_strategy(strategy: str, device: torch.device | str) -> str:
    """``rows`` or ``voices`` for ``strategy`` on ``device`` (see the module's docstring)."""
    if strategy not in STRATEGIES:
        raise LoraError(
            f"mixed-batch strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}"
        )
    if strategy == "auto":
        return "rows" if torch.device(device).type == "cuda" else "voices"
    return strategy


def synthesize_by_voice(
    bank: Any, pipeline: ConversionPipeline, jobs: Sequence[SynthJob], voices: Sequence[str | None]
) -> list[np.ndarray]:
    """Each job's ``[T * hop]`` audio, synthesized alone by its voice merged into the base; each
    voice is merged once, in order of first appearance. The bank's active voice is restored."""
    outputs: list[np.ndarray | None] = [None] * len(jobs)
    with bank.keep_active():
        for voice in dict.fromkeys(voices):
            model = bank.use(voice)
            for i, v in enumerate(voices):
                if v == voice:
                    outputs[i] = pipeline.synthesize(model, jobs[i])
    return outputs  # type: ignore[return-value]


def convert_batch(
    bank: Any,
    pipeline: ConversionPipeline,
    items: Sequence[ConvertItem | tuple],
    max_rows: int = 8,
    strategy: str = "auto",
) -> list[tuple[np.ndarray, int]]:
    """Convert every item with its own voice; synthesis runs as ``strategy`` says.

    Each result equals ``pipeline.convert(bank.merged(voice), audio, options, index)`` within
    float rounding (the same seeds give the same noise).
    """
    how = resolve_strategy(strategy, next(bank.model.parameters()).device)
    items = [i if isinstance(i, ConvertItem) else ConvertItem(*i) for i in items]
    model = bank.model
    plans = [pipeline.plan(model, it.audio, it.options, it.index) for it in items]
    jobs, voices, owner = [], [], []
    for k, (plan, item) in enumerate(zip(plans, items)):
        for job in pipeline.jobs(model, plan):
            jobs.append(job)
            voices.append(item.voice)
            owner.append(k)
    if how == "rows":
        outputs = synthesize_mixed(bank, jobs, voices, max_rows)
    else:
        outputs = synthesize_by_voice(bank, pipeline, jobs, voices)
    per_item: list[list[np.ndarray]] = [[] for _ in items]
    for k, out in zip(owner, outputs):
        per_item[k].append(out)
    return [pipeline.finish(plan, outs) for plan, outs in zip(plans, per_item)]
