"""``python infer.py jobs=manifest.csv``: many (source, voice) conversions on one base, batched.

The manifest is a CSV with the columns ``source``, ``voice`` and ``output`` (relative paths are
read from the manifest's folder). ``voice`` is an adapter ``.safetensors``, or empty for the base
model's own voice. Every adapter must be trained on the same base; the base is loaded once into a
:class:`~rvc_lora.inference.voices.VoiceBank` and ``jobs_batch`` jobs at a time are converted
together (:func:`~rvc_lora.inference.mixed.convert_batch`): in mixed batches, or voice by voice,
as ``jobs_strategy`` says.

The content encoder and F0 method are those of the first voice's run (or the options given);
each voice keeps its own retrieval index (``added_*.index`` beside the adapter) and, with
``pitch=auto``, its own median F0. A row whose source cannot be read is skipped with its reason
and counted in the summary; a manifest that cannot be used at all is one line of error.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import DictConfig

from rvc_lora.audio import AudioError, load_audio
from rvc_lora.utils.errors import RvcLoraError

log = logging.getLogger(__name__)
COLUMNS = ("source", "voice", "output")


class JobsError(RvcLoraError, ValueError):
    """A manifest that cannot be used: one line naming the file and the fix."""


@dataclass(frozen=True)
class Job:
    source: Path
    voice: Path | None  # None: the base's own voice
    output: Path


def read_manifest(path: Path) -> list[Job]:
    """The jobs of a manifest, paths resolved against its folder."""
    if not path.is_file():
        raise JobsError(f"{path}: no such manifest; pass jobs=<csv with {', '.join(COLUMNS)}>")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
            header = list(rows[0].keys()) if rows else []
    except (UnicodeDecodeError, csv.Error) as exc:
        raise JobsError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in COLUMNS if c not in header]
    if not rows or missing:
        raise JobsError(
            f"{path}: needs a header with columns {', '.join(COLUMNS)} and at least one row"
            + (f" (missing {', '.join(missing)})" if rows else "")
        )
    root = path.parent
    jobs = []
    for i, row in enumerate(rows, start=2):
        source, voice, output = ((row.get(c) or "").strip() for c in COLUMNS)
        if not source or not output:
            raise JobsError(f"{path}: line {i} has no source or no output")
        jobs.append(Job(root / source, root / voice if voice else None, root / output))
    outputs = [j.output.resolve() for j in jobs]
    doubled = sorted({str(o) for o in outputs if outputs.count(o) > 1})
    if doubled:
        raise JobsError(f"{path}: two jobs write {doubled[0]}; give each job its own output")
    return jobs


def run_jobs(cfg: DictConfig) -> list[Path]:
    """Convert every job of ``cfg.jobs``; returns the files written."""
    from rvc_lora.features.index import FeatureIndex
    from rvc_lora.inference.checkpoints import find_base, run_dir_of
    from rvc_lora.inference.mixed import ConvertItem, resolve_strategy
    from rvc_lora.inference.pipeline import MIN_SAMPLES
    from rvc_lora.inference.pitch import parse_pitch, require_voice_median
    from rvc_lora.inference.setup import (
        conversion_setup,
        find_index,
        print_summary,
        run_config,
        write_audio,
    )
    from rvc_lora.inference.voices import VoiceBank
    from rvc_lora.lora import read_adapter
    from rvc_lora.models import load_rvc_checkpoint

    manifest = Path(cfg.jobs)
    strategy = str(cfg.get("jobs_strategy", "auto"))
    resolve_strategy(strategy, "cpu")  # a bad name fails before any work
    jobs = read_manifest(manifest)
    adapters = list(dict.fromkeys(j.voice for j in jobs if j.voice is not None))
    for a in adapters:
        if not a.is_file():
            raise JobsError(f"{manifest}: voice {a} does not exist; fix the voice column")
        read_adapter(a)  # one line if it is not an adapter
    pretrained = cfg.model.get("pretrained_g")
    bases = {a: find_base(a, run_dir_of(a), pretrained) for a in adapters}
    if len({b.resolve() for b in bases.values()}) > 1:
        raise JobsError(
            f"{manifest}: the voices were trained on different bases "
            f"({', '.join(sorted({b.name for b in bases.values()}))}); one manifest per base, "
            "or model.pretrained_g=<the shared base>"
        )
    if not bases and not pretrained:
        raise JobsError(f"{manifest}: only base-voice jobs; pass model.pretrained_g=<base .pth>")
    base = next(iter(bases.values())) if bases else Path(pretrained)
    bank = VoiceBank(load_rvc_checkpoint(base, keep_posterior=False).model)
    names = {a: str(a) for a in adapters}
    for a in adapters:
        bank.add(names[a], a)
    trained = run_config(adapters[0]) if adapters else None
    pitch = parse_pitch(cfg.pitch)
    options, pipeline, _ = conversion_setup(
        cfg, bank.model, trained, None, pitch=0.0 if pitch == "auto" else pitch
    )
    per_voice = {}
    for a in [*adapters, None]:
        index_path = Path(cfg.index) if cfg.get("index") else (find_index(a) if a else None)
        index = None
        if index_path is not None and options.index_rate > 0:
            index = FeatureIndex.load(index_path, expected_dim=bank.model.config.feature_dim)
        opts = options
        if pitch == "auto":
            opts = replace(options, auto_pitch_hz=require_voice_median(a)) if a else options
        per_voice[a] = (opts, index)

    items, targets, failed = [], [], []
    for job in jobs:
        try:
            audio, _ = load_audio(job.source, 16000)
            if len(audio) < MIN_SAMPLES:
                raise AudioError(f"{job.source}: too short ({len(audio)} samples at 16 kHz)")
        except AudioError as exc:
            failed.append(str(exc))
            log.warning("skipped %s", exc)
            continue
        opts, index = per_voice[job.voice]
        items.append(ConvertItem(audio, names.get(job.voice), opts, index))
        targets.append(job.output)
    written = []
    size = int(cfg.get("jobs_batch", 8))
    for start in range(0, len(items), size):
        done = bank.convert_batch(
            pipeline, items[start : start + size], max_rows=size, strategy=strategy
        )
        for (audio, sr), target in zip(done, targets[start : start + size]):
            write_audio(target, audio, sr, str(cfg.output_subtype))
            written.append(target)
    print_summary(
        f"converted {len(written)} job(s) of {manifest} with {len(adapters)} voice(s)", failed
    )
    return written
