"""Load a voice for inference from whatever training left behind.

Accepted files (chosen by suffix, then checked by content):

- ``.pth``: an RVC inference export or pretrained/training ``G`` (RVC's own formats);
- ``.safetensors``: a LoRA adapter, applied to its base model;
- ``.ckpt``: a Lightning checkpoint of a run (``<run>/checkpoints/x.ckpt``), which holds only the
  trained tensors (``state_dict`` under ``generator.<...>``) and an ``rvc_lora`` record.

Where the base comes from (adapters and LoRA-mode ``.ckpt``), first hit wins:

1. ``pretrained_g`` passed by the caller;
2. ``base.pth`` next to the file, or in the run directory (runs that started from a random init
   write their initial generator there, in RVC's pretrained layout ``{"model": state}``);
3. ``model.pretrained_g`` of the run's ``.hydra/config.yaml``. Hydra saves that file unresolved,
   so ``${hydra:runtime.cwd}`` / ``${hydra:runtime.output_dir}`` are filled in from
   ``.hydra/hydra.yaml`` (or the run directory). A relative path is tried against Hydra's launch
   directory when known, then the run directory and each of its parents (a run dir sits at
   ``<root>/outputs/<experiment>/<date>/<time>``, and Hydra 1.3 keeps the launch cwd, so a
   relative ``models/f0G40k.pth`` is found under ``<root>``).

Full fine-tuning ``.ckpt`` files hold every generator tensor, so they need no base: the model is
built from the recorded preset and loaded strictly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from rvc_lora.lora import (
    LoraConfig,
    LoraError,
    base_identity,
    inject_lora,
    injection,
    load_adapter,
    read_adapter,
    trainable_parameters,
)
from rvc_lora.models.checkpoint import load_rvc_checkpoint, load_state_strict
from rvc_lora.models.presets import PRESETS
from rvc_lora.models.synthesizer import Synthesizer, build_synthesizer
from rvc_lora.utils.errors import CheckpointError
from rvc_lora.utils.safe_load import safe_torch_load

CKPT_KEY = "rvc_lora"  # same string as training.module.CKPT_KEY (not imported: keeps Lightning out)
_PREFIX = "generator."
_KINDS = "pass an adapter .safetensors, a run's .ckpt or an RVC .pth"


def load_voice_model(
    ckpt: str | os.PathLike[str], *, pretrained_g: str | os.PathLike[str] | None = None
) -> tuple[Synthesizer, dict[str, Any]]:
    """Build the synthesizer a checkpoint describes, ready for ``infer`` (eval, no ``enc_q``).

    Args:
        ckpt: RVC ``.pth``, adapter ``.safetensors`` or a run's Lightning ``.ckpt``.
        pretrained_g: base model for adapters and LoRA checkpoints; overrides the base recorded
            next to the file (see the module docstring for the search order).
    Returns:
        ``(model, info)``: adapters stay unmerged (exact; call ``merge_lora`` for speed).
        ``info`` has ``kind`` ("rvc" | "adapter" | "lightning"), ``version``, ``sr``, ``f0``,
        ``preset``, ``lora_targets`` (empty for plain models) and ``base`` (path or None).
    Raises:
        CheckpointError: one line naming the file and the fix (unknown kind, wrong content,
            missing base, adapter made for another base).
    """
    path = Path(ckpt)
    suffix = path.suffix.lower()
    if suffix not in (".pth", ".safetensors", ".ckpt"):
        raise CheckpointError(f"{path}: not a model checkpoint; {_KINDS}")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; check the path")
    if suffix == ".pth":
        loaded = load_rvc_checkpoint(path, keep_posterior=False)
        model = loaded.model
        return _ready(model), _info("rvc", model, loaded.preset, [], None)
    if suffix == ".safetensors":
        read_adapter(path)  # not an adapter: say so before looking for a base
        base_path = find_base(path, path.parent, pretrained_g)
        loaded = load_rvc_checkpoint(base_path, keep_posterior=False)
        load_adapter(loaded.model, path)  # refuses another base (one line)
        targets = _targets(loaded.model)
        return _ready(loaded.model), _info(
            "adapter", loaded.model, loaded.preset, targets, base_path
        )
    return _load_lightning(path, pretrained_g)


def run_dir_of(path: Path) -> Path:
    """The run directory of a run file: ``<run>/checkpoints/x.ckpt`` -> ``<run>``."""
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def find_base(
    artifact: Path, run_dir: Path, pretrained_g: str | os.PathLike[str] | None = None
) -> Path:
    """Path of the base model for ``artifact`` (order in the module docstring).

    Raises:
        CheckpointError: no base found, or the recorded one does not exist.
    """
    if pretrained_g is not None:
        p = Path(pretrained_g)
        if not p.is_file():
            raise CheckpointError(f"{p}: pretrained_g not found; check the path")
        return p
    for folder in dict.fromkeys((artifact.parent, run_dir)):
        if (folder / "base.pth").is_file():
            return folder / "base.pth"
    recorded, cfg_file = _recorded_pretrained_g(run_dir)
    if recorded is None:
        where = (
            f"model.pretrained_g is null in {cfg_file}"
            if cfg_file.is_file()
            else (f"no {cfg_file}")
        )
        raise CheckpointError(
            f"{artifact}: cannot find its base model (no base.pth next to it; {where}); "
            f"pass model.pretrained_g=<RVC base .pth> (infer.py; pretrained_g= in Python)"
        )
    found = _resolve_recorded(recorded, run_dir)
    if found is None:
        raise CheckpointError(
            f"{artifact}: base {recorded!r} from {cfg_file} not found (tried the launch dir, the "
            f"run dir and its parents); pass model.pretrained_g=<RVC base .pth> (infer.py; pretrained_g= in Python)"
        )
    return found


def _hydra_runtime(run_dir: Path) -> dict[str, str]:
    runtime = {"output_dir": str(run_dir)}
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        try:
            node = OmegaConf.to_container(OmegaConf.load(hydra_file), resolve=False)
            rt = node.get("hydra", {}).get("runtime", {}) if isinstance(node, dict) else {}
            runtime.update({k: str(rt[k]) for k in ("cwd", "output_dir") if rt.get(k)})
        except Exception:  # noqa: BLE001 - an unreadable hydra.yaml only loses a hint
            pass
    return runtime


def _recorded_pretrained_g(run_dir: Path) -> tuple[str | None, Path]:
    cfg_file = run_dir / ".hydra" / "config.yaml"
    if not cfg_file.is_file():
        return None, cfg_file
    text = cfg_file.read_text()
    runtime = _hydra_runtime(run_dir)
    # Unknown launch dir: "." keeps the path relative, and the parent search below finds it.
    for key, value in (("cwd", runtime.get("cwd", ".")), ("output_dir", runtime["output_dir"])):
        text = text.replace("${hydra:runtime." + key + "}", value)
    try:
        value = OmegaConf.select(OmegaConf.create(text), "model.pretrained_g")
    except Exception as err:  # noqa: BLE001 - bad YAML or an interpolation we cannot resolve
        first = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise CheckpointError(
            f"{cfg_file}: cannot read model.pretrained_g ({first}); pass pretrained_g="
        ) from None
    return (None if value in (None, "") else str(value)), cfg_file


def _resolve_recorded(recorded: str, run_dir: Path) -> Path | None:
    p = Path(recorded).expanduser()
    if p.is_absolute():
        return p if p.is_file() else None
    cwd = _hydra_runtime(run_dir).get("cwd")
    roots = ([Path(cwd)] if cwd else []) + [run_dir, *run_dir.resolve().parents]
    return next((r / p for r in roots if (r / p).is_file()), None)


def _load_lightning(path: Path, pretrained_g: str | os.PathLike[str] | None):
    ckpt = safe_torch_load(path)  # torch.load(weights_only=True) with one-line errors
    if (
        not isinstance(ckpt, dict)
        or not isinstance(ckpt.get(CKPT_KEY), dict)
        or not isinstance(ckpt.get("state_dict"), dict)
    ):
        raise CheckpointError(
            f"{path}: not a training checkpoint of rvc-lora (no 'state_dict' and "
            f"'{CKPT_KEY}' entries); {_KINDS}"
        )
    rec = ckpt[CKPT_KEY]
    _check_record(path, rec, ckpt["state_dict"])
    state = {k[len(_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(_PREFIX)}
    other = [k for k in ckpt["state_dict"] if not k.startswith((_PREFIX, "discriminator."))]
    if other:
        raise CheckpointError(f"{path}: unexpected tensors in state_dict, e.g. {other[:3]}")
    if rec.get("mode") == "full":
        return _load_full(path, rec, state)
    if rec.get("mode") != "lora":
        raise CheckpointError(f"{path}: unknown training mode {rec.get('mode')!r} in '{CKPT_KEY}'")
    base_path = find_base(path, run_dir_of(path), pretrained_g)
    loaded = load_rvc_checkpoint(base_path, keep_posterior=False)
    model = loaded.model
    if rec.get("preset") is not None and loaded.preset != rec["preset"]:
        raise CheckpointError(
            f"{path}: trained on preset {rec['preset']}, but base {base_path} is "
            f"{loaded.preset}; pass the base it was trained on as pretrained_g="
        )
    try:
        cfg = LoraConfig.from_dict(rec.get("lora_config") or {})
        targets = inject_lora(model, cfg)
    except LoraError as err:
        raise CheckpointError(f"{path}: its LoRA config does not fit the base: {err}") from None
    mine, theirs = base_identity(model), rec.get("base_identity") or {}
    if theirs.get("sha256") != mine["sha256"]:
        raise CheckpointError(
            f"{path}: trained on another base (sha256 {str(theirs.get('sha256'))[:16]} vs "
            f"{mine['sha256'][:16]} of {base_path}); pass the base it was trained on as "
            f"pretrained_g="
        )
    if list(rec.get("targets") or targets) != targets:
        raise CheckpointError(f"{path}: recorded LoRA targets differ from the injected ones")
    params = trainable_parameters(model)
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    shaped = [k for k in params if k in state and state[k].shape != params[k].shape]
    if missing or unexpected or shaped:
        raise CheckpointError(
            f"{path}: tensors do not fit the LoRA config (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, wrong shape {shaped[:3]})"
        )
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(state[k].to(device=p.device, dtype=p.dtype))
    return _ready(model), _info("lightning", model, loaded.preset, targets, base_path)


def _check_record(path: Path, rec: dict[str, Any], state_dict: dict[Any, Any]) -> None:
    """Types of what a training checkpoint records, before any of it is used."""
    bad = [repr(k)[:40] for k, v in state_dict.items() if not isinstance(k, str)]
    bad += [
        f"{k} ({type(v).__name__ if not isinstance(v, torch.Tensor) else v.dtype})"
        for k, v in state_dict.items()
        if isinstance(k, str) and not (isinstance(v, torch.Tensor) and v.is_floating_point())
    ]
    if bad:
        raise CheckpointError(
            f"{path}: state_dict entries that are not float tensors under string keys: "
            f"{', '.join(bad[:3])}; the file is damaged or not an rvc-lora checkpoint"
        )
    nonfinite = [k for k, v in state_dict.items() if not torch.isfinite(v).all()]
    if nonfinite:
        raise CheckpointError(
            f"{path}: NaN or Inf in {', '.join(nonfinite[:3])}; the run diverged or the file is "
            f"damaged: use an earlier checkpoint"
        )
    kinds = {
        "preset": (str, type(None)), "f0": (bool, type(None)),
        "base_identity": (dict, type(None)), "targets": (list, type(None)),
    }  # fmt: skip
    wrong = [f"{k}={rec[k]!r:.40}" for k, t in kinds.items() if not isinstance(rec.get(k), t)]
    wrong += [f"preset={rec['preset']!r:.40}"] * (
        isinstance(rec.get("preset"), str) and rec["preset"] not in PRESETS
    )
    if wrong or not all(isinstance(t, str) for t in rec.get("targets") or []):
        raise CheckpointError(
            f"{path}: unreadable '{CKPT_KEY}' record ({', '.join(wrong) or 'targets'}); the file "
            f"is damaged or not an rvc-lora checkpoint"
        )


def _load_full(path: Path, rec: dict[str, Any], state: dict[str, torch.Tensor]):
    # Every generator tensor is in the checkpoint: the base is not needed, only its shapes.
    preset = rec.get("preset")
    if preset is None:
        raise CheckpointError(f"{path}: full fine-tuning checkpoint without a preset name")
    model = build_synthesizer(preset, f0=bool(rec.get("f0", True)))
    model.remove_posterior()
    # enc_q trains with the generator but inference never uses it (RVC exports drop it too).
    state = {k: v for k, v in state.items() if not k.startswith("enc_q.")}
    load_state_strict(model, state, source=str(path))
    return _ready(model), _info("lightning", model, preset, [], None)


def _targets(model: Synthesizer) -> list[str]:
    info = injection(model)
    return list(info.matched) if info else []


def _ready(model: Synthesizer) -> Synthesizer:
    model.remove_posterior()
    return model.eval()


def _info(
    kind: str, model: Synthesizer, preset: str | None, targets: list[str], base: Path | None
) -> dict[str, Any]:
    return {
        "kind": kind,
        "version": model.version,
        "sr": model.sr,
        "f0": model.f0,
        "preset": preset,
        "lora_targets": list(targets),
        "base": None if base is None else str(base),
    }


__all__ = ["find_base", "load_voice_model", "run_dir_of"]
