"""Cross-check rvc-lora's FCPE against torchfcpe 0.0.4's own inference code, file by file.

    python scripts/fcpe_crosscheck.py [--files GLOB] [--limit N] [--threads 2]

Both sides read the same ``fcpe_c_v001.pt`` (the script checks that the file bundled in the
torchfcpe wheel has the sha256 of ``models/fcpe_c_v001.pt``) and decode with local argmax at
threshold 0.006. torchfcpe is never a dependency of rvc-lora: it is pip-installed with
``--no-deps`` into ``--reference`` (default ``cache/fcpe_reference``, git-ignored) and imported
from there with a stub in place of torchaudio, which it imports but only uses to resample audio
that is not at 16 kHz. Default input: every demo voice file (``data/demo/voices/*/{train,eval}``).

Writes ``table.md`` and ``run.json`` into ``--results`` (default ``results/fcpe_crosscheck``).
Exits 1 unless >= 99% of the frames voiced on both sides are within 5 cents and the sides agree
on voiced/unvoiced for >= 99% of all frames.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import io
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PINS = ("torchfcpe==0.0.4", "einops", "local-attention<=1.9")  # 1.11 imports an undeclared package
DEFAULT_FILES = ("data/demo/voices/*/train/*.flac", "data/demo/voices/*/eval/*.flac")
CENTS, MIN_WITHIN, MIN_VUV = 5.0, 0.99, 0.99


def install_reference(target: Path) -> Path:
    """pip-install torchfcpe 0.0.4 (and the two packages it imports) into ``target`` once.

    Raises:
        RuntimeError: pip failed (e.g. no access to PyPI); the message ends with pip's last line.
    """
    if all((target / name).is_dir() for name in ("torchfcpe", "einops", "local_attention")):
        return target
    cmd = [sys.executable, "-m", "pip", "install", "--target", str(target), "--no-deps", *PINS]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(
            f"could not pip-install the torchfcpe reference into {target} (needs PyPI): {last}"
        )
    return target


def stub_torchaudio() -> None:
    """Put a ``torchaudio`` in ``sys.modules`` whose ``transforms.Resample`` refuses to run."""

    class Resample:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("torchaudio stub: the cross-check feeds 16 kHz audio only")

    transforms = types.ModuleType("torchaudio.transforms")
    transforms.Resample = Resample  # type: ignore[attr-defined]
    module = types.ModuleType("torchaudio")
    module.transforms = transforms  # type: ignore[attr-defined]
    sys.modules["torchaudio"], sys.modules["torchaudio.transforms"] = module, transforms


def spawn_reference(target: Path) -> tuple[object, Path]:
    """torchfcpe's bundled model (quietly) and the path of the asset it loaded."""
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
    stub_torchaudio()
    with contextlib.redirect_stdout(io.StringIO()):  # its [INFO]/[WARN] device lines
        import torchfcpe

        model = torchfcpe.spawn_bundled_infer_model(device="cpu")
    return model, Path(torchfcpe.__file__).parent / "assets" / "fcpe_c_v001.pt"


def reference_f0(model: object, x: np.ndarray) -> np.ndarray:
    """torchfcpe's F0 of 16 kHz ``x [N]`` -> Hz ``[N // 160 + 1]`` float64, 0 = unvoiced."""
    import torch

    wav = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, :, None]
    f0 = model.infer(wav, sr=16000, decoder_mode="local_argmax", threshold=0.006)  # type: ignore[attr-defined]
    return f0.reshape(-1).double().numpy()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare_tracks(ref: np.ndarray, ours: np.ndarray, cents: float = CENTS) -> dict[str, float]:
    """Counts of agreement between two F0 tracks in Hz (0 = unvoiced).

    Returns:
        frames, voiced_ref, both_voiced, within (frames voiced on both sides whose pitches are
        at most ``cents`` apart), vuv_agree (frames with the same voiced/unvoiced decision), and
        max_cents (largest difference on frames voiced on both sides; 0 if none).
    Raises:
        ValueError: the tracks differ in length.
    """
    if ref.shape != ours.shape:
        raise ValueError(f"F0 tracks differ in length: {ref.shape} vs {ours.shape}")
    v_ref, v_ours = ref > 0, ours > 0
    both = v_ref & v_ours
    diff = np.abs(1200.0 * np.log2(ours[both] / ref[both]))
    return {
        "frames": int(ref.size),
        "voiced_ref": int(v_ref.sum()),
        "both_voiced": int(both.sum()),
        "within": int((diff <= cents).sum()),
        "vuv_agree": int((v_ref == v_ours).sum()),
        "max_cents": float(diff.max()) if diff.size else 0.0,
    }


def merge(stats: list[dict[str, float]]) -> dict[str, float]:
    """Sum the counts (and seconds) of several comparisons; keep the largest ``max_cents``."""
    out = {k: sum(s[k] for s in stats) for k in stats[0] if k != "max_cents"}
    return {**out, "max_cents": max(s["max_cents"] for s in stats)}


def rates(s: dict[str, float]) -> tuple[float, float]:
    """(fraction within the cents limit of the frames voiced on both sides, V/UV agreement)."""
    within = s["within"] / s["both_voiced"] if s["both_voiced"] else float("nan")
    return within, s["vuv_agree"] / s["frames"]


def passes(s: dict[str, float]) -> bool:
    within, vuv = rates(s)
    return within >= MIN_WITHIN and vuv >= MIN_VUV  # NaN (nothing voiced) fails


def table(per_voice: dict[str, dict[str, float]], overall: dict[str, float], n_files: int) -> str:
    minutes = overall["audio_s"] / 60
    lines = [
        f"Our FCPE (`load_fcpe`) against torchfcpe 0.0.4's own inference code "
        f"(`spawn_bundled_infer_model`, local argmax, threshold 0.006), both reading the same "
        f"`fcpe_c_v001.pt`, on {n_files} demo files ({minutes:.1f} min of 16 kHz audio).",
        "",
        "| voice | frames | voiced (torchfcpe) | within 5 cents | max \\|Δ\\| cents "
        "| V/UV agree | torchfcpe s/min | ours s/min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in [*per_voice.items(), ("**all**", overall)]:
        within, vuv = rates(s)
        per_min = 60 / s["audio_s"]
        lines.append(
            f"| {name} | {s['frames']:,} | {s['voiced_ref']:,} | {within:.2%} | "
            f"{s['max_cents']:.4f} | {vuv:.2%} | {s['ref_s'] * per_min:.2f} | "
            f"{s['ours_s'] * per_min:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--files", action="append", help="glob of audio files, read at 16 kHz (repeatable)"
    )
    ap.add_argument("--limit", type=int, default=None, help="first N files only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", type=Path, default=ROOT / "models" / "fcpe_c_v001.pt")
    ap.add_argument("--reference", type=Path, default=ROOT / "cache" / "fcpe_reference")
    ap.add_argument("--results", type=Path, default=ROOT / "results" / "fcpe_crosscheck")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    import torch

    from rvc_lora.audio import load_audio
    from rvc_lora.features.fcpe import load_fcpe

    torch.set_num_threads(args.threads)
    patterns = args.files or [str(ROOT / p) for p in DEFAULT_FILES]
    files = sorted({Path(f) for p in patterns for f in glob.glob(p)})[: args.limit]
    if not files:
        raise SystemExit(f"no audio files match {', '.join(patterns)}")
    ours = load_fcpe(args.weights)
    ref, asset = spawn_reference(install_reference(args.reference))
    if sha256(asset) != sha256(args.weights):
        raise SystemExit(f"{asset} and {args.weights} differ: not the same FCPE weights")

    by_voice: dict[str, list[dict[str, float]]] = {}
    for i, path in enumerate(files):
        x, _ = load_audio(path, 16000)
        if i == 0:  # warm-up: allocator, mel basis
            reference_f0(ref, x), ours.infer(x)
        t0 = time.perf_counter()
        a = reference_f0(ref, x)
        t1 = time.perf_counter()
        b = ours.infer(x)
        t2 = time.perf_counter()
        stats = {**compare_tracks(a, b), "ref_s": t1 - t0, "ours_s": t2 - t1}
        by_voice.setdefault(path.parent.parent.name, []).append(
            {**stats, "audio_s": x.size / 16000}
        )
    per_voice = {voice: merge(s) for voice, s in by_voice.items()}
    overall = merge(list(per_voice.values()))
    text = table(per_voice, overall, len(files))
    print(text)

    from rvc_lora.report.provenance import stamp, write_json
    from rvc_lora.utils.atomic import atomic_write_text

    given = sys.argv[1:] if argv is None else list(argv)
    atomic_write_text(args.results / "table.md", text)
    record = stamp(["python", "scripts/fcpe_crosscheck.py", *given], time.perf_counter() - start)
    record["figures"] = {"all": overall, **per_voice}
    write_json(args.results / "run.json", record)
    within, vuv = rates(overall)
    if not passes(overall):
        print(f"FAIL: {within:.2%} within {CENTS:g} cents (need {MIN_WITHIN:.0%}), V/UV {vuv:.2%} (need {MIN_VUV:.0%})")  # fmt: skip
        return 1
    print(f"wrote {args.results / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
