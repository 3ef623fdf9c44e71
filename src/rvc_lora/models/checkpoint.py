"""Read RVC's checkpoint formats into our models, checking every key and shape.

Formats (RVC_FACTS.md §5):
- pretrained base / training checkpoint: ``{"model": state, ...}`` with ``enc_q`` (fp16 or fp32);
- exported inference model: ``{"weight", "config", "info", "sr", "f0", "version"}``, no ``enc_q``;
- a bare generator state dict.
The file never says which preset it is, so the preset is found by matching the state dict's
shapes against each preset's (on the meta device: no memory is allocated for the candidates).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rvc_lora.models.discriminator import PERIODS, MultiPeriodDiscriminator, build_discriminator
from rvc_lora.models.presets import PRESETS, SynthConfig
from rvc_lora.models.synthesizer import Synthesizer
from rvc_lora.utils.errors import CheckpointError
from rvc_lora.utils.safe_load import safe_torch_load

_MAX_LISTED = 6
# Far above any RVC model (widest layer 768, longest list 5, largest kernel 24), far below
# sizes that would take long to build even on the meta device.
_MAX_CHANNELS, _MAX_SMALL, _MAX_LIST = 4096, 64, 8


@dataclass
class LoadedCheckpoint:
    """A model read from an RVC file, with what the file said about it."""

    model: Synthesizer
    kind: str  # "pretrained" | "inference" | "state_dict"
    version: str
    sr: int
    f0: bool
    preset: str | None
    path: Path
    info: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> SynthConfig:
        return self.model.config


def expected_state_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``module.state_dict()`` (RVC names: ``weight_g``/``weight_v``)."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    return f"{len(keys)} ({shown}{', …' if len(keys) > _MAX_LISTED else ''})"


def state_mismatches(
    expected: Mapping[str, tuple[int, ...]],
    state: Mapping[str, torch.Tensor],
    allow_missing: tuple[str, ...] = (),
) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, mis-shaped) keys; missing keys under ``allow_missing`` prefixes pass."""
    missing = [k for k in expected if k not in state and not k.startswith(allow_missing)]
    unexpected = [k for k in state if k not in expected]
    shaped = [
        f"{k} {tuple(state[k].shape)}!={expected[k]}"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    return missing, unexpected, shaped


def _check_entries(state: Mapping[Any, Any], source: str) -> None:
    bad_keys = [repr(k)[:40] for k in state if not isinstance(k, str)]
    if bad_keys:
        raise CheckpointError(f"{source}: keys that are not strings: {_listing(bad_keys)}")
    bad_values = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad_values:
        raise CheckpointError(f"{source}: entries that are not tensors: {_listing(bad_values)}")


_RVC_HINT = "Check that the file is an RVC model of this version/sample rate/F0 kind"


def _raise_if_unfit(
    what: str,
    missing: list[str],
    unexpected: list[str],
    shaped: list[str],
    source: str,
    hint: str = _RVC_HINT,
) -> None:
    if missing or unexpected or shaped:
        parts = [
            f"{label} {_listing(keys)}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", shaped),
            )
            if keys
        ]
        raise CheckpointError(f"{source}: does not fit {what}: {'; '.join(parts)}. {hint}")


def load_state_strict(
    module: nn.Module,
    state: Mapping[str, Any],
    *,
    allow_missing: tuple[str, ...] = (),
    source: str = "state dict",
    hint: str = _RVC_HINT,
) -> None:
    """Load ``state`` into ``module`` only if every key and shape fits.

    Args:
        allow_missing: key prefixes the caller knows may be absent (e.g. ``("enc_q.",)``);
            those parameters keep their current values.
        source: what to call the state in the error (usually the file path).
        hint: the error's last sentence: what the user should check.
    Raises:
        CheckpointError: one message listing missing, unexpected and mis-shaped keys.
    """
    check_state_fits(module, state, allow_missing=allow_missing, source=source, hint=hint)
    module.load_state_dict(dict(state), strict=False)


def check_state_fits(
    module: nn.Module,
    state: Mapping[str, Any],
    *,
    allow_missing: tuple[str, ...] = (),
    source: str = "state dict",
    hint: str = _RVC_HINT,
) -> None:
    """:func:`load_state_strict`'s checks alone: ``module`` may live on the meta device, so a
    file's fit is known before memory of the size it claims is taken."""
    _check_entries(state, source)
    missing, unexpected, shaped = state_mismatches(
        expected_state_shapes(module), state, allow_missing
    )
    _raise_if_unfit(type(module).__name__, missing, unexpected, shaped, source, hint)


@functools.lru_cache(maxsize=64)
def _meta_shapes(config: SynthConfig, f0: bool) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return expected_state_shapes(Synthesizer(config, f0=f0))


def _candidates(
    state: Mapping[str, torch.Tensor], source: str
) -> tuple[list[tuple[str, SynthConfig]], bool]:
    """Every preset (sized to the file's speaker table) whose generator shapes equal ``state``'s."""
    if "emb_g.weight" not in state or "enc_p.emb_phone.weight" not in state:
        raise CheckpointError(
            f"{source}: not an RVC generator (no emb_g.weight / enc_p.emb_phone.weight); "
            f"if it is a discriminator use load_rvc_discriminator"
        )
    _check_entries(state, source)
    f0 = "dec.m_source.l_linear.weight" in state
    emb = state["emb_g.weight"]
    n_spk = int(emb.shape[0]) if emb.dim() == 2 else 0
    if not 1 <= n_spk <= _MAX_CHANNELS:
        # The one size taken from the file: capped, as the model is allocated at that size.
        raise CheckpointError(
            f"{source}: emb_g.weight has shape {tuple(emb.shape)}; an RVC speaker table is "
            f"[speakers (1..{_MAX_CHANNELS}), gin_channels]"
        )
    allow = () if any(k.startswith("enc_q.") for k in state) else ("enc_q.",)
    fits: list[tuple[str, SynthConfig]] = []
    best: tuple[int, str, list[str]] | None = None
    for name, preset in PRESETS.items():
        config = preset.replace(spk_embed_dim=n_spk)
        errors = [
            e for part in state_mismatches(_meta_shapes(config, f0), state, allow) for e in part
        ]
        if not errors:
            fits.append((name, config))
        elif best is None or len(errors) < best[0]:
            best = (len(errors), name, errors)
    if not fits:
        assert best is not None
        raise CheckpointError(
            f"{source}: matches no known RVC preset ({', '.join(PRESETS)}); closest is {best[1]} "
            f"with {best[0]} differing keys, e.g. {', '.join(best[2][:3])}"
        )
    return fits, f0


def _metadata_filter(meta: Mapping[str, Any], f0: bool, source: str) -> tuple[str, Any]:
    """(description, predicate on SynthConfig) from a file's ``sr``/``version``/``f0``/``config``."""
    said: list[str] = []
    tests: list[Any] = []
    for key in ("sr", "version", "f0", "config"):
        value = meta.get(key)
        if value is None:
            continue
        try:
            if key == "sr":
                sr = _sr_from_field(value)
                said.append(f"sr={sr}")
                tests.append(lambda c, sr=sr: c.sr == sr)
            elif key == "version":
                if value not in ("v1", "v2"):
                    raise ValueError
                said.append(f"version={value}")
                tests.append(lambda c, v=value: c.version == v)
            elif key == "f0":
                flag = int(value)
                said.append(f"f0={flag}")
                tests.append(lambda c, flag=flag: bool(flag) == f0)
            else:
                listed = SynthConfig.from_rvc_list(list(value), "v1")
                said.append("config list")
                tests.append(
                    lambda c, lc=listed: (
                        (c.upsample_rates, c.upsample_kernel_sizes, c.sr)
                        == (lc.upsample_rates, lc.upsample_kernel_sizes, lc.sr)
                    )
                )
        except (ValueError, TypeError, IndexError, OverflowError):
            raise CheckpointError(
                f"{source}: unreadable {key!r} entry {str(value)[:40]!r}; remove it or fix it "
                f"(RVC writes sr as '40k', version 'v1'/'v2', f0 0/1, config an 18-item list)"
            ) from None
    return ", ".join(said), (lambda c: all(t(c) for t in tests))


def _match_preset(
    state: Mapping[str, torch.Tensor],
    source: str,
    *,
    meta: Mapping[str, Any] | None = None,
    preset: str | None = None,
) -> tuple[str, SynthConfig, bool]:
    """The preset (and F0 kind) of ``state``: by shapes, then by metadata, then by the caller.

    Args:
        meta: the file's other top-level entries; RVC's ``sr``/``version``/``f0``/``config``
            are used when present, and must agree with the weights.
        preset: the preset the caller expects (e.g. the run's ``model=``); it must fit the
            shapes, and decides between presets that fit equally.
    Raises:
        CheckpointError: no preset fits; metadata or ``preset`` contradicts the weights; or
            two presets still fit (e.g. v1_32k and v1_48k without F0 and ``enc_q``, whose
            weights have the same shapes), listing the candidates and how to choose.
    """
    fits, f0 = _candidates(state, source)
    names = ", ".join(n for n, _ in fits)
    said, agrees = _metadata_filter(meta or {}, f0, source)
    if said:
        fits = [(n, c) for n, c in fits if agrees(c)]
        if not fits:
            raise CheckpointError(
                f"{source}: metadata ({said}) fits none of the presets its weights fit "
                f"({names}, f0={int(f0)}); the file's entries contradict its weights: fix or "
                f"remove them"
            )
    if preset is not None:
        chosen = [(n, c) for n, c in fits if n == preset]
        if not chosen:
            raise CheckpointError(
                f"{source}: weights are not preset {preset}; they fit "
                f"{', '.join(n for n, _ in fits)}: pick the matching model config or file"
            )
        fits = chosen
    if len(fits) > 1:
        listed = [n for n, _ in fits]
        raise CheckpointError(
            f"{source}: the file fits {len(fits)} presets equally ({', '.join(listed)}): their "
            f"weights have the same shapes without F0 and enc_q, and the file has no sr/config "
            f"entry to tell them apart; choose with {' or '.join(f'model={n}' for n in listed)} "
            f"(preset= in Python)"
        )
    name, config = fits[0]
    return name, config, f0


def _sr_from_field(value: Any) -> int:
    if isinstance(value, str):
        return int(value.lower().rstrip("k")) * 1000
    return int(value)


def _config_problem(config: SynthConfig) -> str | None:
    """Why ``config`` is no plausible RVC generator (sizes capped so that even building it on the
    meta device stays cheap), or ``None``."""
    ints = {
        "spec_channels": config.spec_channels,
        "inter_channels": config.inter_channels,
        "hidden_channels": config.hidden_channels,
        "filter_channels": config.filter_channels,
        "upsample_initial_channel": config.upsample_initial_channel,
        "gin_channels": config.gin_channels,
        "spk_embed_dim": config.spk_embed_dim,
    }
    for name, value in ints.items():
        if not 1 <= value <= _MAX_CHANNELS:
            return f"{name}={value} (allowed 1..{_MAX_CHANNELS})"
    small = {
        "n_heads": config.n_heads,
        "n_layers": config.n_layers,
        "kernel_size": config.kernel_size,
    }
    lists = {
        "resblock_kernel_sizes": config.resblock_kernel_sizes,
        "upsample_rates": config.upsample_rates,
        "upsample_kernel_sizes": config.upsample_kernel_sizes,
        **{
            f"resblock_dilation_sizes[{i}]": d for i, d in enumerate(config.resblock_dilation_sizes)
        },
    }
    if len(config.resblock_dilation_sizes) > _MAX_LIST:
        return f"resblock_dilation_sizes has {len(config.resblock_dilation_sizes)} items"
    for name, items in lists.items():
        if not 1 <= len(items) <= _MAX_LIST:
            return f"{name} has {len(items)} items (allowed 1..{_MAX_LIST})"
        small.update({f"{name}[{i}]": v for i, v in enumerate(items)})
    for name, value in small.items():
        if not 1 <= value <= _MAX_SMALL:
            return f"{name}={value} (allowed 1..{_MAX_SMALL})"
    if config.resblock not in ("1", "2"):
        return f"resblock={config.resblock!r}"
    if config.upsample_initial_channel >> len(config.upsample_rates) < 1:
        return "upsample_initial_channel too small for the number of upsampling stages"
    return None


def _inference_layout(
    obj: Mapping[str, Any], source: str
) -> tuple[Mapping[str, Any], SynthConfig, bool, str | None]:
    """(state, config, f0, preset) of an exported inference ``.pth``, checked on the meta device
    before anything is allocated: a crafted ``config`` cannot make us build a huge model."""
    state = obj["weight"]
    if not isinstance(state, dict) or "emb_g.weight" not in state:
        raise CheckpointError(f"{source}: 'weight' holds no RVC generator (no emb_g.weight)")
    _check_entries(state, source)
    try:
        version = str(obj.get("version", "v1"))  # old v1-era exports lack these fields
        f0 = bool(int(obj.get("f0", 1)))
        # RVC sizes the speaker table from the weights, not from config[-3] (§5.3).
        spk = state["emb_g.weight"].shape[0] if state["emb_g.weight"].dim() == 2 else -1
        config = SynthConfig.from_rvc_list(list(obj["config"]), version, spk_embed_dim=int(spk))
    except (ValueError, TypeError, IndexError, OverflowError) as exc:
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{source}: unreadable RVC 'config'/'version'/'f0' ({first})"
        ) from None
    problem = _config_problem(config)
    if problem is not None:
        raise CheckpointError(
            f"{source}: 'config' is no RVC generator ({problem}); the file is damaged or not an "
            f"RVC export"
        )
    preset = next(
        (
            n
            for n, p in PRESETS.items()
            if p.replace(
                spk_embed_dim=config.spk_embed_dim,
                segment_size=config.segment_size,
                n_mels=config.n_mels,
            )
            == config
        ),
        None,
    )
    if preset is not None:
        config = config.replace(
            segment_size=PRESETS[preset].segment_size, n_mels=PRESETS[preset].n_mels
        )
    try:
        shapes = _meta_shapes(config, f0)
    except Exception as exc:  # noqa: BLE001 - odd but capped sizes can fail in any layer
        raise CheckpointError(
            f"{source}: 'config' is no buildable RVC generator ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:100] if str(exc) else ''})"
        ) from None
    missing, unexpected, shaped = state_mismatches(shapes, state, ("enc_q.",))
    _raise_if_unfit("the model its 'config' describes", missing, unexpected, shaped, source)
    return state, config, f0, preset


def load_rvc_checkpoint(
    path: str | os.PathLike[str], *, keep_posterior: bool = True, preset: str | None = None
) -> LoadedCheckpoint:
    """Build the right synthesizer for an RVC file and load its weights strictly.

    Args:
        path: a pretrained base (``f0G40k.pth``), a training ``G_*.pth``, an exported inference
            ``.pth`` or a bare state dict. Loaded with ``weights_only=True``: code in the pickle
            is refused, never run.
        keep_posterior: for files with ``enc_q``, keep it (training). Exported models never have
            it, and come back with ``model.enc_q = None``.
        preset: the preset the caller expects, if known (``model=`` of a run). The file must
            fit it; it decides between presets whose weights have the same shapes.
    Returns:
        :class:`LoadedCheckpoint` with the model in eval mode (float32, CPU).
    Raises:
        CheckpointError: one line naming the file: unreadable or unsafe, unknown layout, no
            preset fits, or two presets fit and nothing in the file tells them apart.
    """
    path = Path(path)
    obj = safe_torch_load(path)
    source = str(path)
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{source}: expected a dict of RVC model data, got {type(obj).__name__}"
        )
    if "weight" in obj and "config" in obj:
        kind = "inference"
        state, config, f0, found = _inference_layout(obj, source)
        if preset is not None and found != preset:
            raise CheckpointError(
                f"{source}: weights are not preset {preset}; its config is {found or 'custom'}: "
                f"pick the matching model config or file"
            )
        version, info = config.version, str(obj.get("info", ""))
        extras = {k: v for k, v in obj.items() if k not in ("weight", "config")}
    else:
        if "model" in obj and isinstance(obj["model"], dict):
            state, kind = obj["model"], "pretrained"
            extras = {k: v for k, v in obj.items() if k not in ("model", "optimizer")}
        elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            state, kind, extras = obj, "state_dict", {}
        else:
            raise CheckpointError(
                f"{source}: unknown layout (top-level keys: "
                f"{', '.join(repr(k)[:40] for k in list(obj)[:8])}); expected an RVC pretrained "
                f"base ('model') or an exported model ('weight', 'config')"
            )
        found, config, f0 = _match_preset(state, source, meta=extras, preset=preset)
        version, info = config.version, ""
    model = Synthesizer(config, f0=f0)
    has_enc_q = any(k.startswith("enc_q.") for k in state)
    load_state_strict(model, state, allow_missing=() if has_enc_q else ("enc_q.",), source=source)
    if not has_enc_q or not keep_posterior:
        model.remove_posterior()
    model.eval()
    return LoadedCheckpoint(
        model=model,
        kind=kind,
        version=version,
        sr=config.sr,
        f0=f0,
        preset=found,
        path=path,
        info=info,
        extras=extras,
    )


def load_rvc_discriminator(path: str | os.PathLike[str]) -> MultiPeriodDiscriminator:
    """Load an RVC discriminator file (``f0D40k.pth`` or ``D_*.pth``): v1, v2 or tiny by shape."""
    path = Path(path)
    obj = safe_torch_load(path)
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not any(str(k).startswith("discriminators.") for k in state):
        raise CheckpointError(f"{path}: not an RVC discriminator (no 'discriminators.*' keys)")
    for version in (*PERIODS, "tiny"):
        with torch.device("meta"):
            shapes = expected_state_shapes(build_discriminator(version))
        if not any(state_mismatches(shapes, state)):
            disc = build_discriminator(version)
            load_state_strict(disc, state, source=str(path))
            return disc
    raise CheckpointError(
        f"{path}: discriminator matches neither RVC v1 (7 members), v2 (9 members) nor tiny"
    )
