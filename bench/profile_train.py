"""Where one training step's time and memory go, by region (issue 17's before/after profile).

One step of one variant (``bench_train``'s ``lora``, ``full_g`` or ``full``) runs through the
real LightningModule and Trainer after warm-up steps; the profiled step is split into regions:
- encoders+flow (``enc_p``, ``enc_q``, ``flow``, speaker embedding), decoder (``dec``), D real
  and D fake (each member discriminator's call, told apart by the waveform it is given), and
  losses+glue: the rest of the forward (mel spectrograms, loss terms, slicing, zero_grad, Lightning);
  optimiser steps apart. D regions and losses+glue are listed by the loss they serve ("D loss"
  only with a trained D, "G loss"); the generator runs once, for both.
- forward s: time in the region's forward calls; backward s: time in the autograd nodes the
  region's forward made (node hooks; "engine" is the rest of backward: the autograd engine and
  the hooks themselves); kept MB: bytes of the distinct storages the region saved for backward
  (``saved_tensors_hooks``), parameters and buffers left out, a storage counted once, for the
  first region that saved it. Under activation checkpointing the inputs a checkpoint keeps are not
  counted and its recomputation is part of the backward time.

Not part of ``make bench`` (a profile, not a benchmark). The hooks add a little time of their own.

    python bench/profile_train.py [--variant lora|full_g|full] [--reference]
        [--checkpoint-activations] [--preset v2_40k] [--batch 4] [--frames 370] [--threads N]
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_train beside this file
from bench_train import VARIANTS, build_module, make_batch  # noqa: E402

ENCODERS = ("enc_p", "enc_q", "flow", "emb_g")  # generator children reported as encoders+flow
GLUE = "losses+glue"  # forward outside the hooked modules, and its autograd nodes


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _storage(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


class StepProfile(L.Callback):
    """Profiles training batch ``at`` (the ones before it are warm-up); see the module doc."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.forward_s: dict[str, float] = defaultdict(float)
        self.backward_s: dict[str, float] = defaultdict(float)
        self.kept: dict[str, int] = defaultdict(int)
        self.step_s = self.optimizer_s = self.backward_total_s = self.hooks_s = 0.0
        self._stack: list[str] = []  # labels of the regions being run, innermost last
        self._mark = 0.0
        self._phase = "G loss"
        self._in_backward = self._in_optimizer = False
        self._owner: dict[Any, str] = {}  # autograd node -> label of the region that made it
        self._node_start = 0.0
        self._seen: set[int] = set()  # storages saved for backward since the last backward
        self._fixed: set[int] = set()  # storages of parameters and buffers
        self._undo: list[Callable[[], None]] = []
        self._d_inputs: dict[int, str] = {}
        self._cuda = False

    # ---- clock ------------------------------------------------------------------------------

    def _now(self) -> float:
        if self._cuda:  # asynchronous kernels: wait for them, or launches would be timed
            torch.cuda.synchronize()
        return time.perf_counter()

    def _tick(self) -> float:
        """Book the time since the last event to what ran: the innermost region, backward,
        an optimiser step, or else the forward outside the modules (losses+glue)."""
        now = self._now()
        spent, self._mark = now - self._mark, now
        if self._in_backward:
            self.backward_total_s += spent
        elif self._in_optimizer:
            self.optimizer_s += spent
        else:
            self.forward_s[self._stack[-1] if self._stack else self._label(GLUE)] += spent
        return now

    def _enter(self, label: str) -> None:
        self._tick()
        self._stack.append(label)

    def _leave(self, outputs: Any) -> None:
        self._tick()
        label = self._stack.pop()
        self._claim(outputs, label)

    def _label(self, name: str) -> str:
        return f"{self._phase}: {name}"

    # ---- backward: autograd nodes by region ---------------------------------------------------

    def _claim(self, outputs: Any, label: str) -> None:
        """Give ``label`` every not yet claimed node the region's outputs were made by (the
        time this takes is the profile's own, booked apart)."""
        self._tick()
        start = self._mark
        todo = [t.grad_fn for t in _tensors(outputs) if t.grad_fn is not None]
        while todo:
            node = todo.pop()
            if node is None or node in self._owner:
                continue
            self._owner[node] = label
            node.register_prehook(self._node_pre)
            node.register_hook(lambda gi, go, label=label: self._node_post(label))
            todo.extend(n for n, _ in node.next_functions)
        self._mark = self._now()
        self.hooks_s += self._mark - start

    def _node_pre(self, grad_outputs: Any) -> None:
        self._node_start = self._now()

    def _node_post(self, label: str) -> None:
        self.backward_s[label] += self._now() - self._node_start

    # ---- memory kept for backward -------------------------------------------------------------

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        ptr, nbytes = _storage(t)
        if ptr not in self._fixed and ptr not in self._seen:
            self._seen.add(ptr)
            self.kept[self._stack[-1] if self._stack else self._label(GLUE)] += nbytes
        return t

    # ---- hooks on the module, installed for the profiled batch only -----------------------------

    def _hook_module(self, module: nn.Module, name: str | Callable[[Any], str]) -> None:
        def pre(mod: nn.Module, args: tuple) -> None:
            if not self._in_backward:  # a checkpoint's recomputation stays backward time
                self._enter(name if isinstance(name, str) else self._label(name(args)))

        def post(mod: nn.Module, args: tuple, out: Any) -> None:
            if not self._in_backward:
                self._leave(out)

        handles = [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
        self._undo += [h.remove for h in handles]

    def _d_member(self, args: tuple) -> str:
        x = args[0]
        seen = self._d_inputs.get(_storage(x)[0])
        if seen is None:  # called other than through the top-level D: judged by the graph
            seen = "fake" if x.requires_grad else "real"
        return f"D {seen}"

    def _d_top(self, mod: nn.Module, args: tuple) -> None:
        y, y_hat = args[:2]
        self._d_inputs.update({_storage(y)[0]: "real", _storage(y_hat)[0]: "fake"})

    def _dec_out(self, mod: nn.Module, args: tuple, out: Any) -> None:
        if isinstance(out, torch.Tensor):  # ŷ: what a member given this storage scores is fake
            self._d_inputs[_storage(out)[0]] = "fake"

    def _install(self, trainer: L.Trainer, module: Any) -> None:
        self._cuda = module.device.type == "cuda"
        gen, disc = module.generator, module.discriminator
        for child_name, child in gen.named_children():  # G runs once per step, before D's
            label = "encoders+flow" if child_name in ENCODERS else child_name
            self._hook_module(child, "decoder" if child_name == "dec" else label)
        self._undo.append(gen.dec.register_forward_hook(self._dec_out).remove)
        self._undo.append(disc.register_forward_pre_hook(self._d_top).remove)
        for member in disc.discriminators:
            self._hook_module(member, self._d_member)
        self._wrap_backward(module)
        for i, opt in enumerate(trainer.optimizers):
            self._undo.append(opt.register_step_pre_hook(self._opt_pre).remove)
            post = self._opt_post_d if i == 1 else self._opt_post
            self._undo.append(opt.register_step_post_hook(post).remove)
        self._fixed = {
            _storage(t)[0] for t in (*module.parameters(), *module.buffers()) if t.numel()
        }
        hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        hooks.__enter__()
        self._undo.append(lambda: hooks.__exit__(None, None, None))
        self._phase = "D loss" if len(trainer.optimizers) > 1 else "G loss"

    def _wrap_backward(self, module: Any) -> None:
        original = module.manual_backward

        def backward(loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
            self._claim(loss, self._label(GLUE))  # the loss terms' nodes
            self._in_backward = True
            try:
                original(loss, *args, **kwargs)
            finally:
                self._tick()
                self._in_backward = False
                self._seen = set()  # freed by backward: their addresses may be reused

        module.manual_backward = backward
        self._undo.append(lambda: delattr(module, "manual_backward"))

    def _opt_pre(self, opt: Any, args: Any, kwargs: Any) -> None:
        self._tick()
        self._in_optimizer = True

    def _opt_post(self, opt: Any, args: Any, kwargs: Any) -> None:
        self._tick()
        self._in_optimizer = False

    def _opt_post_d(self, opt: Any, args: Any, kwargs: Any) -> None:
        self._opt_post(opt, args, kwargs)
        self._phase = "G loss"

    # ---- Lightning hooks ----------------------------------------------------------------------

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.at:
            # The hooks make many small objects; a full collection they set off would take
            # ~0.5 s of the step (the heap holds torch and Lightning). Collected before, not in.
            gc.collect()
            gc.disable()
            self._undo.append(gc.enable)
            self._install(trainer, pl_module)
            self._step_start = self._mark = self._now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.at:
            self.step_s = self._tick() - self._step_start
            for undo in reversed(self._undo):
                undo()
            self._undo, self._owner = [], {}

    # ---- report -------------------------------------------------------------------------------

    def table(self) -> list[str]:
        """Rows ``region, forward s, backward s, kept MB``; then backward's engine time,
        optimiser steps and the step's total (the sum of the time column and these)."""
        first = {"encoders+flow": 0, "decoder": 1}  # G, then D's loss, then G's, in step order
        labels = sorted(
            {*self.forward_s, *self.backward_s, *self.kept},
            key=lambda k: (first.get(k, 2 if k.startswith("D loss") else 3), k.endswith(GLUE), k),
        )
        lines = [f"{'region':<28} {'forward s':>9} {'backward s':>10} {'kept MB':>8}"]
        for k in labels:
            lines.append(
                f"{k:<28} {self.forward_s.get(k, 0.0):9.3f} {self.backward_s.get(k, 0.0):10.3f} "
                f"{self.kept.get(k, 0) / 2**20:8.1f}"
            )
        engine = self.backward_total_s - sum(self.backward_s.values())
        kept = sum(self.kept.values()) / 2**20
        lines += [
            f"{'backward engine, hooks':<28} {'':>9} {engine:10.3f}",
            f"{'optimiser steps':<28} {self.optimizer_s:9.3f}",
            f"{'profile hooks (forward)':<28} {self.hooks_s:9.3f}",
            f"{'step total':<28} {self.step_s:9.3f} {'':>10} {kept:8.1f}",
        ]
        return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=list(VARIANTS), default="lora")
    ap.add_argument("--preset", default="v2_40k")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=370)
    ap.add_argument("--warmup", type=int, default=1, help="steps before the profiled one")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--reference", action="store_true", help="profile the pre-issue code")
    ap.add_argument("--checkpoint-activations", action="store_true")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    module = build_module(
        args.variant,
        args.preset,
        reference=args.reference,
        checkpoint_activations=args.checkpoint_activations,
    )
    c = module.generator.config
    batches = [make_batch(c, args.batch, args.frames) for _ in range(args.warmup + 1)]
    profile = StepProfile(at=args.warmup)
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=args.warmup + 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        enable_model_summary=False,
        callbacks=[profile],
    )
    trainer.fit(module, torch.utils.data.DataLoader(batches, batch_size=None))
    if accelerator == "gpu":
        peak = f"CUDA allocator peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MB"
    else:
        peak = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    code = "pre-issue code (reference)" if args.reference else "this code"
    if args.checkpoint_activations:
        code += ", activation checkpointing"
    print(
        f"{args.preset}, batch {args.batch}, {args.frames}-frame items, {args.threads} threads, "
        f"{accelerator}, {VARIANTS[args.variant][0]}, {code}, step {args.warmup + 1} "
        f"({args.warmup} warm-up), {peak}"
    )
    print("\n".join(profile.table()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
