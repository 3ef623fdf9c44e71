"""LoraConfig validation that mutation testing (docs/mutation.md) found unchecked: the pattern
count limit at its edge, how regex cost is counted (groups, lookaheads, alternations, bounded
repeats), value types of the pattern overrides, and the exact one-line messages."""

from __future__ import annotations

import pytest

from rvc_lora.lora.config import MAX_PATTERNS, LoraConfig, LoraError

LONG = "x" * 100 + "["  # a bad regex longer than the 80 characters a message quotes
QUOTED = repr(LONG[:80])
NESTED = "has nested repetition (a repeat over a repeat or an alternation), which can take exponential time; write it without nesting"


def _refused(**kw) -> str:
    with pytest.raises(LoraError) as err:
        LoraConfig(**kw)
    return str(err.value)


def test_pattern_count_limit_at_its_edge() -> None:
    assert len(LoraConfig(targets=[f"m{i}" for i in range(MAX_PATTERNS)]).targets) == MAX_PATTERNS
    many = [f"m{i}" for i in range(MAX_PATTERNS + 1)]
    assert _refused(targets=many) == "targets: 1001 patterns; at most 1000"
    pairs = [[f"m{i}", 2] for i in range(MAX_PATTERNS + 1)]
    assert (
        _refused(targets=["m"], rank_pattern=pairs) == "rank_pattern: 1001 patterns; at most 1000"
    )


@pytest.mark.parametrize(
    "pattern",
    [
        "a+b+(?=c+)(d+|e+)",  # lookahead and group count beside the repeats before them
        "a+(b+)(c+)(d+)(e+)",
        "a+b+c+(?:d+|e+)",
        "a{0,2}b{0,2}c{0,2}d{0,2}e{0,2}",  # bounded repeats above 1 count too
        "(a+)?(b+)?(c+)?(d+)?(e+)?",  # an optional group's repeats count
    ],
)
def test_five_repeats_anywhere_are_counted(pattern: str) -> None:
    msg = _refused(targets=[pattern])
    assert msg == f"targets[0]: {pattern!r} has 5 open-ended repeats; at most 4"


@pytest.mark.parametrize("pattern", ["(?:(?=a+)b)*", "(a+){0,2}", "(ab|cd)*"])
def test_repeats_inside_repeats_are_nested(pattern: str) -> None:
    assert _refused(targets=[pattern]) == f"targets[0]: {pattern!r} {NESTED}"


@pytest.mark.parametrize("pattern", ["a?b?c?d?e?f?", "(a+)?", "(ab?)+", "a+b+c+d+"])
def test_optional_parts_and_four_repeats_are_fine(pattern: str) -> None:
    assert LoraConfig(targets=[pattern]).targets == [pattern]


def test_long_patterns_are_quoted_to_80_characters() -> None:
    msg = _refused(targets=[LONG])
    assert msg.startswith(f"targets[0]: bad regex {QUOTED} (")
    nested = "y" * 90 + "((a+)+)"
    assert _refused(targets=[nested]) == f"targets[0]: {nested[:80]!r} {NESTED}"
    repeats = "z" * 90 + "a+b+c+d+e+"
    assert _refused(targets=[repeats]) == (
        f"targets[0]: {repeats[:80]!r} has 5 open-ended repeats; at most 4"
    )


def test_type_errors_name_the_field_and_the_type() -> None:
    assert _refused(targets="dec") == "targets: expected a list of regex strings, got str"
    assert _refused(targets=[5]) == "targets[0]: expected a regex string, got int"
    assert _refused(targets=["a"], rank_pattern=5) == (
        "rank_pattern: expected [regex, value] pairs or a mapping regex -> value, got int"
    )
    assert _refused(targets=["a"], rank_pattern=[5]) == (
        "rank_pattern[0]: expected a [regex, value] pair, got 5"
    )
    assert _refused(rank=0, targets=["a"]) == "rank must be a positive int (e.g. 8), got 0"
    assert _refused(alpha=-1, targets=["a"]) == "alpha must be a positive number (e.g. 16), got -1"
    for p in ("0.1", False):
        assert _refused(dropout=p, targets=["a"]) == (
            f"dropout must be in [0, 1), got {p!r}; use e.g. dropout=0.05"
        )


def test_rank_overrides_are_ints_and_alpha_overrides_keep_fractions() -> None:
    cfg = LoraConfig(targets=["a"], rank_pattern=[["a", 4]], alpha_pattern=[["a", 2.5]])
    assert cfg.rank_pattern == [("a", 4)] and type(cfg.rank_for("a")) is int
    assert cfg.alpha_for("a") == 2.5
    assert _refused(targets=["a"], rank_pattern=[["a", 2.5]]) == (
        "rank_pattern['a'] must be a positive int (e.g. 8), got 2.5"
    )
    assert _refused(targets=["a"], alpha_pattern=[["a", 0]]) == (
        "alpha_pattern['a'] must be a positive number (e.g. 16), got 0"
    )
