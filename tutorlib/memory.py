"""Memory: measure it, cap it, free it, run out of it; and estimate it before loading (the
arithmetic lives in `tutorlib.estimate`, and `memory.estimate` is the same function)."""

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psutil
import torch
from transformers import AutoConfig, TrainerCallback

from tutorlib import models
from tutorlib.estimate import GB, MB, METHODS, Estimate, estimate

__all__ = ["GB", "MB", "METHODS", "Estimate", "estimate"]  # estimating lives in tutorlib.estimate


@dataclass
class Usage:
    """What a `track()` block used, filled in when it exits (also on error)."""

    peak_mb: float = 0.0
    kind: str = "cpu_rss"  # "cuda": torch's allocator, tensors only; "cpu_rss": the whole process
    baseline_mb: float = 0.0  # the same quantity when the block began
    seconds: float = 0.0

    def __str__(self) -> str:
        took = f"{self.seconds / 60:.2f} min" if self.seconds >= 60 else f"{self.seconds:.1f} s"
        return f"{took} · peak {self.peak_mb:,.0f} MB ({self.kind})"


@contextmanager
def track(interval_s: float = 0.01) -> Iterator[Usage]:
    """Time the block and record its peak memory: the CUDA allocator's own peak, else the
    process's RSS, sampled in a thread (a CPU has no resettable peak)."""
    cuda, process, stop = torch.cuda.is_available(), psutil.Process(), threading.Event()
    if cuda:  # on a CPU build the CUDA calls raise or silently return 0
        torch.cuda.reset_peak_memory_stats()

    def read() -> float:
        return torch.cuda.max_memory_allocated() / MB if cuda else process.memory_info().rss / MB

    def sample() -> None:
        while not cuda and not stop.wait(interval_s):
            usage.peak_mb = max(usage.peak_mb, read())

    usage, start = Usage(kind="cuda" if cuda else "cpu_rss"), time.perf_counter()
    usage.baseline_mb = usage.peak_mb = torch.cuda.memory_allocated() / MB if cuda else read()
    (sampler := threading.Thread(target=sample, daemon=True)).start()
    try:
        yield usage
    finally:
        stop.set()
        sampler.join()
        usage.peak_mb, usage.seconds = max(usage.peak_mb, read()), time.perf_counter() - start


def _positive(label: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{label} must be a number, e.g. 16; got {value!r} ({type(value).__name__})"
        )
    if not value > 0:
        raise ValueError(f"{label} must be a positive number, got {value!r}")
    return float(value)


def _limit(gb: float) -> bool:
    """Cap PyTorch's CUDA allocator at `gb` GB, so that a big GPU behaves like a smaller card
    (the CUDA context comes on top); False where there is nothing to cap."""
    gb = _positive("gb (the card's size in GB)", gb)
    total = torch.cuda.mem_get_info()[1] if torch.cuda.is_available() else 0  # this device's size
    if capped := gb * GB < total:
        torch.cuda.set_per_process_memory_fraction(gb * GB / total)
    what = "capped" if capped else "nothing to cap"
    print(f"a {gb:g} GB card: {what} ({total / GB:.1f} GB of CUDA memory)")
    return capped


def free(*objects: Any) -> None:
    """Empty models and tensors in place (so what a Trainer still references goes too), then
    collect the garbage and, on a GPU, empty PyTorch's cache."""
    for obj in objects:
        if isinstance(obj, torch.nn.Module):
            tensors = [*obj.parameters(), *obj.buffers()]
        elif isinstance(obj, torch.Tensor) or obj is None:
            tensors = [] if obj is None else [obj]
        else:
            kind = type(obj).__name__
            raise TypeError(f"free() empties models and tensors, not {kind}; `del` the others")
        for t in tensors:
            t.grad, t.data = None, torch.empty(0, dtype=t.dtype, device=t.device)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def storages(model: Any, optimizer: Any = None) -> dict[str, dict[tuple, int]]:
    """{storage: bytes} that training holds, by group: weights (with bitsandbytes' quantization
    state), gradients, optimizer state. A storage shared by tied or viewed tensors counts once."""
    params = list(model.parameters())
    quant = [q for p in params if (q := getattr(p, "quant_state", None))]  # 4-bit layers
    owners = params + quant + [getattr(q, "state2", None) for q in quant]  # 8-bit: SCB on a weight
    consts = [getattr(x, a, None) for x in owners for a in ("SCB", "absmax", "code", "offset")]
    grads = [p.grad for p in params]
    states = [v for s in getattr(optimizer, "state", {}).values() for v in s.values()]
    groups = {"weights": params + consts, "gradients": grads, "optimizer": states}
    out, seen = {}, set()
    for group, tensors in groups.items():
        out[group] = {}
        for t in tensors:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            if (key := (storage.device, storage.data_ptr())) not in seen:
                seen.add(key)
                out[group][key] = storage.nbytes()
    return out


class SimulatedOutOfMemory(torch.OutOfMemoryError):
    """`TensorBudget`'s refusal; an OutOfMemoryError, so one `except` catches it and a real OOM."""


class TensorBudget(TrainerCallback):
    """Trainer callback measuring training state (`measured`, `peak_mb`, MB) each step; refuses
    over the budget."""

    def __init__(self, budget_mb: float) -> None:
        self.budget_mb, self.measured, self.peak_mb = _positive("budget_mb", budget_mb), {}, 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if (model := kwargs.get("model")) is None:
            return
        held = storages(model, kwargs.get("optimizer"))
        self.measured = {group: sum(sizes.values()) / MB for group, sizes in held.items()}
        self.peak_mb = max(self.peak_mb, total := sum(self.measured.values()))
        if total > self.budget_mb:
            got = ", ".join(f"{k} {v:,.2f} MB" for k, v in self.measured.items())
            over = f"over the budget of {self.budget_mb:,.2f} MB"
            raise SimulatedOutOfMemory(f"refused after measuring {total:,.2f} MB ({got}), {over}")

    on_optimizer_step = on_step_end = on_train_begin


def emulate_card(gb: float, plan: Any) -> TensorBudget:
    """A `gb` GB card for the run `plan` describes: under `full` a real CUDA cap (no GPU: scaled to
    the checkpoint's share of the real model), under `cpu` and `smoke` scaled to the stand-in."""
    gb = _positive("gb (the card's size in GB)", gb)
    if plan.profile.hub_models and torch.cuda.is_available():
        _limit(gb)
        return TensorBudget(gb * 1024)
    if plan.profile.hub_models:  # `full` on a CPU (make full-check)
        share = models.on_meta(AutoConfig.from_pretrained(plan.checkpoint)).num_parameters()
        share /= models.on_meta(plan.model).num_parameters()  # the checkpoint may hold a few layers
        scaled = f"{gb * share:.2f} GB for a checkpoint of {share:.1%} of the real model"
        print(f"no GPU to cap: a {gb:g} GB card is {scaled}")
        return TensorBudget(gb * 1024 * share)
    dtype = plan.profile.dtype_for(plan.model)
    held = [estimate(plan.checkpoint, method=m, dtype=dtype) for m in ("lora-8bit", "full")]
    low, high = ((e.total_gb - e.breakdown["activations"]) * 1024 for e in held)
    budget = (low * high) ** 0.5
    needs = f"between its 8-bit LoRA ({low:.2f} MB) and full fine-tune ({high:.2f} MB) needs"
    print(
        f"scaled to the {plan.profile.name} stand-in: a {gb:g} GB card is {budget:.2f} MB, {needs}"
    )
    return TensorBudget(budget)
