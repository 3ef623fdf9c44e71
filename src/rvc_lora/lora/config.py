"""LoRA configuration: which modules get adapters, with which rank/alpha, and target presets.

Module and parameter names are RVC's (``dec.ups.0``, ``emb_g.weight``); patterns are regexes
matched with ``re.fullmatch``, so ``dec\\.ups\\.\\d+`` never matches ``dec.ups.0.foo`` by accident.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rvc_lora.utils.errors import RvcLoraError

try:  # the parser behind `re`, to look at a pattern's structure before matching with it
    from re import _parser as _sre  # Python >= 3.11
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre  # type: ignore[no-redef]


class LoraError(RvcLoraError, ValueError):
    """A LoRA config or injection problem (bad field, pattern matching nothing, wrong layer)."""


_DECODER = [r"dec\.ups\.\d+", r"dec\.resblocks\.\d+\.convs[12]\.\d+"]
# The flow's WaveNet layers that see the latent. `flow.flows.N.enc.cond_layer` is left out on
# purpose: its only input is the time-constant speaker vector g, so a LoRA on it collapses to a
# per-speaker bias on the gates, which training `emb_g` (an extra in every preset) already gives.
# Add it with `targets` if an ablation wants it.
_FLOW = [r"flow\.flows\.\d+\.enc\.(in_layers|res_skip_layers)\.\d+"]
_ENC_P = [
    r"enc_p\.encoder\.attn_layers\.\d+\.conv_[qkvo]",
    r"enc_p\.encoder\.ffn_layers\.\d+\.conv_[12]",
]
_SPEAKER = [r"emb_g\.weight"]

PRESETS: dict[str, dict[str, list[str]]] = {
    "decoder": {"targets": _DECODER, "extra_trainable": _SPEAKER},
    "decoder_flow": {"targets": _DECODER + _FLOW, "extra_trainable": _SPEAKER},
    "all": {"targets": _DECODER + _FLOW + _ENC_P, "extra_trainable": _SPEAKER},
}


def preset_targets(name: str) -> list[str]:
    """Target patterns of a preset (``decoder``, ``decoder_flow``, ``all``)."""
    if name not in PRESETS:
        raise LoraError(f"preset: unknown {name!r}; choose one of {sorted(PRESETS)}")
    return list(PRESETS[name]["targets"])


def preset_extra_trainable(name: str) -> list[str]:
    """Whole-tensor extras of a preset (the speaker embedding)."""
    preset_targets(name)  # validates the name
    return list(PRESETS[name]["extra_trainable"])


# Patterns arrive in adapter files from anywhere, and `re` has no time limit: these bounds keep
# matching them against module names fast (see _check_cost).
MAX_PATTERNS = 1000
MAX_OPEN_REPEATS = 4


def _check_count(items: list[Any], name: str) -> None:
    if len(items) > MAX_PATTERNS:
        raise LoraError(f"{name}: {len(items)} patterns; at most {MAX_PATTERNS}")


def _as_list(value: Any, name: str) -> list[str]:
    # Hydra hands us ListConfig; accept any non-string sequence of strings.
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise LoraError(f"{name}: expected a list of regex strings, got {type(value).__name__}")
    out = list(value)
    _check_count(out, name)
    for i, pat in enumerate(out):
        _check_regex(pat, f"{name}[{i}]")
    return out


def _check_regex(pat: Any, name: str) -> None:
    if not isinstance(pat, str):
        raise LoraError(f"{name}: expected a regex string, got {type(pat).__name__}")
    try:
        parsed = _sre.parse(pat)
        re.compile(pat)
    except (re.error, RecursionError, OverflowError) as err:
        raise LoraError(f"{name}: bad regex {pat[:80]!r} ({err}); fix the pattern") from None
    _check_cost(parsed, pat, name)


def _repeats(items: Any, nested_in: bool) -> int:
    """Open-ended repeats (``*``, ``+``, ``{2,}``) in a parsed pattern; raises ValueError on a
    repeat that holds another repeat or an alternation."""
    count = 0
    for op, av in items:
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
            lo, hi, body = av
            if hi > 1:
                if nested_in:
                    raise ValueError
                count += 1
            count += _repeats(body, nested_in or hi > 1)
        elif op == _sre.BRANCH:
            if nested_in:
                raise ValueError
            count += sum(_repeats(alt, nested_in) for alt in av[1])
        elif op == _sre.SUBPATTERN:
            count += _repeats(av[-1], nested_in)
        elif op in (_sre.ASSERT, _sre.ASSERT_NOT):
            count += _repeats(av[1], nested_in)
    return count


def _check_cost(parsed: Any, pat: str, name: str) -> None:
    # A repeat over a repeat or an alternation, ((a|a)*)*, backtracks exponentially on a name it
    # does not match; k open-ended repeats cost up to len(name)**k.
    try:
        n = _repeats(parsed, nested_in=False)
    except ValueError:
        raise LoraError(
            f"{name}: {pat[:80]!r} has nested repetition (a repeat over a repeat or an "
            "alternation), which can take exponential time; write it without nesting"
        ) from None
    if n > MAX_OPEN_REPEATS:
        raise LoraError(
            f"{name}: {pat[:80]!r} has {n} open-ended repeats; at most {MAX_OPEN_REPEATS}"
        )


def _positive_number(value: Any, name: str, integer: bool) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) or value <= 0:
        kind = "a positive int (e.g. 8)" if integer else "a positive number (e.g. 16)"
        raise LoraError(f"{name} must be {kind}, got {value!r}")


Patterns = list[tuple[str, Any]]


def first_match(patterns: Sequence[tuple[str, Any]], name: str) -> Any | None:
    """Value of the first ``(regex, value)`` pair whose regex fullmatches ``name``, else None."""
    for pat, value in patterns:
        if re.fullmatch(pat, name):
            return value
    return None


def _as_pairs(value: Any, name: str, integer: bool) -> Patterns:
    # A mapping (Hydra, Python) keeps its insertion order; files hold [regex, value] pairs
    # because a JSON object's key order does not survive sort_keys or other tools.
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, Sequence) and not isinstance(value, str):
        items = list(value)
    else:
        raise LoraError(
            f"{name}: expected [regex, value] pairs or a mapping regex -> value, "
            f"got {type(value).__name__}"
        )
    _check_count(items, name)
    out: Patterns = []
    for i, item in enumerate(items):
        if isinstance(item, str) or not isinstance(item, Sequence) or len(item) != 2:
            raise LoraError(f"{name}[{i}]: expected a [regex, value] pair, got {item!r}")
        pat, val = item
        _check_regex(pat, f"{name}[{i}]")
        if any(pat == seen for seen, _ in out):
            raise LoraError(f"{name}[{i}]: pattern {pat!r} given twice; keep one")
        _positive_number(val, f"{name}[{pat!r}]", integer=integer)
        out.append((pat, int(val) if integer else float(val)))
    return out


@dataclass
class LoraConfig:
    """Validated LoRA settings.

    Args:
        rank: default LoRA rank r.
        alpha: default scaling numerator; the delta is scaled by alpha/r (alpha/sqrt(r) with
            ``use_rslora``).
        dropout: dropout probability on the LoRA branch input (training only), in [0, 1).
        use_rslora: rank-stabilised scaling alpha/sqrt(r).
        use_dora: DoRA (trainable per-channel magnitude, LoRA on the direction).
        targets: regexes fullmatched on qualified module names; None takes the preset's.
        exclude: regexes of module names to skip even when a target matches.
        rank_pattern / alpha_pattern: per-module overrides as ``(regex, value)`` pairs (a
            mapping is taken in its insertion order); the first fullmatching regex wins.
        extra_trainable: regexes fullmatched on parameter names (RVC names, e.g.
            ``emb_g.weight``) whose whole tensors train; None takes the preset's (or none).
        preset: name from :data:`PRESETS` that fills ``targets``/``extra_trainable``.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    use_rslora: bool = False
    use_dora: bool = False
    targets: list[str] | None = None
    exclude: list[str] = field(default_factory=list)
    rank_pattern: list[tuple[str, int]] = field(default_factory=list)
    alpha_pattern: list[tuple[str, float]] = field(default_factory=list)
    extra_trainable: list[str] | None = None
    preset: str | None = None

    def __post_init__(self) -> None:
        _positive_number(self.rank, "rank", integer=True)
        _positive_number(self.alpha, "alpha", integer=False)
        self.alpha = float(self.alpha)
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise LoraError(f"dropout must be in [0, 1), got {p!r}; use e.g. dropout=0.05")
        self.dropout = float(p)
        for flag in ("use_rslora", "use_dora"):
            if not isinstance(getattr(self, flag), bool):
                raise LoraError(f"{flag} must be true or false, got {getattr(self, flag)!r}")
        if self.use_dora and self.dropout > 0:
            # DoRA renormalises the whole weight, so a dropped-out branch has no separable form.
            raise LoraError("dropout must be 0 with use_dora=true; set dropout=0")
        if self.preset is not None:
            preset_targets(self.preset)  # unknown name -> LoraError naming `preset`
            if self.targets is None:
                self.targets = preset_targets(self.preset)
            elif list(self.targets) != preset_targets(self.preset):
                raise LoraError(
                    f"targets and preset={self.preset!r} disagree; set one of them (or preset=null)"
                )
            if self.extra_trainable is None:
                self.extra_trainable = preset_extra_trainable(self.preset)
        if self.targets is None or len(self.targets) == 0:
            raise LoraError(
                f"targets is empty; set targets (regexes) or preset ({sorted(PRESETS)})"
            )
        self.targets = _as_list(self.targets, "targets")
        self.exclude = _as_list(self.exclude, "exclude")
        self.extra_trainable = _as_list(self.extra_trainable or [], "extra_trainable")
        self.rank_pattern = _as_pairs(self.rank_pattern, "rank_pattern", integer=True)
        self.alpha_pattern = _as_pairs(self.alpha_pattern, "alpha_pattern", integer=False)

    def rank_for(self, module_name: str) -> int:
        """Rank of the adapter on ``module_name`` (``rank_pattern`` first, then ``rank``)."""
        r = first_match(self.rank_pattern, module_name)
        return self.rank if r is None else r

    def alpha_for(self, module_name: str) -> float:
        """Alpha of the adapter on ``module_name`` (``alpha_pattern`` first, then ``alpha``)."""
        a = first_match(self.alpha_pattern, module_name)
        return self.alpha if a is None else a

    def scale_for(self, module_name: str) -> float:
        """alpha/r, or alpha/sqrt(r) with rsLoRA."""
        r, a = self.rank_for(module_name), self.alpha_for(module_name)
        return a / math.sqrt(r) if self.use_rslora else a / r

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (lists copied); patterns as ``[regex, value]`` lists."""
        out = asdict(self)
        for name in ("rank_pattern", "alpha_pattern"):
            out[name] = [[pat, value] for pat, value in out[name]]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoraConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise LoraError(f"LoRA config has unknown keys {unknown}; known: {sorted(known)}")
        return cls(**dict(data))
