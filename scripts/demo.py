"""`make demo`: the whole job on CPU in a few minutes, with nothing downloaded.

Until the shipped demo corpus lands (speech synthesised offline, see the issue tracker), the
voice is synthetic: voiced phrases with pauses. The steps are the real ones: prepare and train a
rank-8 adapter on the tiny base, convert a recording into the voice, export it for RVC WebUI.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf

from rvc_lora.data.synthetic import phrases

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "demo"


def main() -> None:
    start = time.perf_counter()
    voice = OUT / "voice"
    voice.mkdir(parents=True, exist_ok=True)
    for i in range(4):  # one voice, four "recordings"
        sf.write(voice / f"take{i}.wav", phrases(16000, n=3, seconds=1.5, seed=i, f0=170), 16000)
    source = OUT / "source.wav"  # another "speaker": lower pitch
    sf.write(source, phrases(16000, n=2, seconds=1.5, seed=42, f0=110), 16000)

    run_dir = OUT / "run"
    py = sys.executable
    subprocess.run(
        [
            py,
            "train.py",
            f"data.input_dir={voice}",
            f"hydra.run.dir={run_dir}",
            "trainer.max_epochs=-1",
            "trainer.max_steps=150",
            "+trainer.val_check_interval=50",
            "trainer.check_val_every_n_epoch=null",
            "features.f0_method=pm",
            "logger=csv",
        ],
        cwd=ROOT,
        check=True,
    )
    converted = OUT / "converted.wav"
    subprocess.run(
        [
            py,
            "infer.py",
            f"ckpt={run_dir / 'adapter.safetensors'}",
            f"source={source}",
            f"output={converted}",
            "pitch=7",
            f"hydra.run.dir={OUT / 'infer'}",
        ],
        cwd=ROOT,
        check=True,
    )
    exported = OUT / "voice.pth"
    subprocess.run(
        [
            py,
            "infer.py",
            "mode=export",
            f"ckpt={run_dir / 'adapter.safetensors'}",
            f"output={exported}",
            f"hydra.run.dir={OUT / 'export'}",
        ],
        cwd=ROOT,
        check=True,
    )
    print(f"\ndemo done in {time.perf_counter() - start:.0f} s")
    print(f"  adapter:   {run_dir / 'adapter.safetensors'}")
    print(f"  metrics:   {run_dir / 'metrics.json'}")
    print(f"  converted: {converted}")
    print(f"  RVC model: {exported}")


if __name__ == "__main__":
    main()
