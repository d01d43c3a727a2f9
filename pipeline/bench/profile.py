"""`make bench` section: where the time of one training step of the neural CTR/CVR model goes.

Reads the `default` experiment's `features/` (train split) when they exist, else profiles a
synthetic matrix of the same shape (`pipeline.bench.neural`). Writes nothing.

For each `neural.precision` (fp32, then bf16: the default on CPUs with native bf16),
`NeuralCTR.fit` runs one epoch of `WARMUP + STEPS` batches, rows drawn at random from the train
rows, under `torch.profiler` (CPU, no shapes or stacks), on the default `NeuralConfig` with the
settings derived from the whole split (batch size included). The training loop and the net
mark each part of a step with a scope `adctr.<part>` (`models.neural_loop`,
`models.dcn_esmm`); the first `WARMUP` steps are dropped, and each category's time is the sum
of its scopes over the other steps. Two rows are remainders: the forward outside its named
parts (the concatenation of x0), and the step outside every scope (zero_grad, the loss
bookkeeping). The ms include the profiler's own overhead (a few microseconds an op), so
samples/s here runs a little below the `neural` section's.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
from torch._C._profiler import _ExperimentalConfig
from torch.autograd.profiler_util import FunctionEvent
from torch.profiler import ProfilerActivity, profile

from models.matrix import FeatureMatrix
from models.neural import NeuralConfig, NeuralCTR
from models.neural_config import PRECISIONS
from models.sizing import neural_defaults, resolve
from pipeline.bench.neural import DEFAULT, THREADS, print_table, real_matrix, synthetic_matrix

log = logging.getLogger(__name__)

WARMUP, STEPS = 5, 40
SYNTHETIC_ROWS = 160_000  # derives the default's settings (batch 2,048, > 5k clicks)
STEP, FORWARD, PARTS = "adctr.step", "adctr.forward", "adctr.parts"
# the forward's parts (nested in FORWARD), then the step's other parts, in a step's order
FORWARD_PARTS = {
    "adctr.ids": "id embedding lookup",
    "adctr.numeric": "numeric input",
    "adctr.text_tower": "text tower",
    "adctr.attention": "item tower (attention)",
    "adctr.cross": "cross network",
    "adctr.mlp": "MLP",
    "adctr.heads": "heads",
}
IN_PARTS = {"adctr.loss": "loss", "adctr.backward": "backward"}  # with the forward
STEP_PARTS = {
    "adctr.dense_optimizer": "dense optimizer (AdamW)",
    "adctr.sparse_optimizer": "sparse optimizer (SparseAdam)",
}
SLICE = {"adctr.slice": "batch slicing"}
FORWARD_REST, STEP_REST = "forward, rest (concat)", "step, rest (zero_grad, bookkeeping)"


@dataclass(frozen=True)
class StepProfile:
    """Mean ms per profiled step by category (table order, both remainders included), the
    mean step in ms, and the aten ops as (name, self CPU ms per step, calls per step)."""

    steps: int
    batch_size: int
    step_ms: float
    parts_ms: dict[str, float]
    ops: list[tuple[str, float, float]]
    in_threads: bool = False  # each batch ran as parts at once in threads (`_parts_gradients`)

    @property
    def samples_per_s(self) -> float:
        return self.batch_size / (self.step_ms / 1e3)

    def shares(self) -> dict[str, float]:
        """Each category's percentage of the step time."""
        return {k: 100.0 * v / self.step_ms for k, v in self.parts_ms.items()}


def profile_steps(
    X: FeatureMatrix,
    click: np.ndarray,
    conv: np.ndarray,
    config: NeuralConfig,
    steps: int = STEPS,
    warmup: int = WARMUP,
    threads: int = THREADS,
) -> StepProfile:
    """Profile `steps` training steps (fewer where `X` has not the rows) after `warmup` ones
    on rows of `X`, with the settings a fit of all of `X` derives."""
    config, _ = resolve(config, neural_defaults(len(X), int(click.sum())))
    steps = min(steps, len(X) // config.batch_size - warmup)
    if steps < 1:
        raise ValueError(f"{len(X):,} rows: not {warmup} + 1 steps of {config.batch_size}")
    rows = (warmup + steps) * config.batch_size
    pick = np.sort(np.random.default_rng(0).choice(len(X), rows, replace=False))
    model = NeuralCTR(replace(config, epochs=1), random_state=0, num_threads=threads)
    every_thread = _ExperimentalConfig(profile_all_threads=True)  # the batch's parts' threads
    with profile(activities=[ProfilerActivity.CPU], experimental_config=every_thread) as prof:
        model.fit(X.take(pick), click[pick], conv[pick])
    return summarise(prof.events(), warmup, config.batch_size)


def summarise(events: Iterable[FunctionEvent], warmup: int, batch_size: int) -> StepProfile:
    """The `StepProfile` of the events inside the `adctr.step` scopes after the first
    `warmup` ones."""
    events = list(events)
    spans = sorted((e.time_range.start, e.time_range.end) for e in events if e.name == STEP)
    spans = spans[warmup:]
    if not spans:
        raise ValueError(f"no {STEP} scope after {warmup} warm-up steps")
    starts = [s for s, _ in spans]

    def profiled(e: FunctionEvent) -> bool:
        i = bisect.bisect_right(starts, e.time_range.start) - 1
        return i >= 0 and e.time_range.end <= spans[i][1]

    scoped: dict[str, float] = defaultdict(float)
    op_us: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for e in filter(profiled, events):
        if e.name.startswith("adctr."):
            scoped[e.name] += e.time_range.elapsed_us()
        elif e.name.startswith("aten::"):
            op_us[e.name] += e.self_cpu_time_total
            calls[e.name] += 1
    n = len(spans)
    ms = {k: v / n / 1e3 for k, v in scoped.items()}
    ms[FORWARD] = ms.get(FORWARD, 0.0) - sum(ms.get(k, 0.0) for k in FORWARD_PARTS)
    in_parts = FORWARD_PARTS | {FORWARD: FORWARD_REST} | IN_PARTS
    labels = SLICE | in_parts | STEP_PARTS
    parts = {label: ms[k] for k, label in labels.items() if k in ms}
    if PARTS in ms:  # the batch's parts ran at once: their work summed over the threads,
        work = sum(ms.get(k, 0.0) for k in in_parts)  # scaled to the wall time they took
        for k, label in in_parts.items():
            if k in ms:
                parts[label] = ms[k] * ms[PARTS] / work
    parts[STEP_REST] = ms[STEP] - sum(parts.values())
    ops = sorted(((k, v / n / 1e3, calls[k] / n) for k, v in op_us.items()), key=lambda t: -t[1])
    return StepProfile(n, batch_size, ms[STEP], parts, ops, PARTS in ms)


def report(result: StepProfile, source: str) -> None:
    """The category table, the top 10 aten ops and samples/s on stdout."""
    shares = result.shares()
    rows = [
        {"category": k, "ms/step": f"{v:.2f}", "share": f"{shares[k]:.1f}%"}
        for k, v in result.parts_ms.items()
    ]
    rows.append({"category": "step (total)", "ms/step": f"{result.step_ms:.2f}", "share": ""})
    wait, load = os.environ.get("OMP_WAIT_POLICY", "unset"), os.getloadavg()[0]
    print(f"{source}: {result.steps} steps of {result.batch_size:,} rows profiled after the")
    print(f"warm-up, {THREADS} threads, OMP_WAIT_POLICY={wait}, 1-min load average {load:.1f}")
    print_table(rows)
    named = FORWARD_PARTS | IN_PARTS | STEP_PARTS
    absent = [v for k, v in named.items() if v not in result.parts_ms]
    if absent:
        print(f"not in this model: {', '.join(absent)}")
    if result.in_threads:
        print(f"each batch ran as {THREADS} parts at once, one thread each: the forward, loss and")
        print("backward rows are the parts' time summed over the threads, scaled to their wall")
    rate = f"{result.samples_per_s:,.0f}"
    print(f"samples/s over the profiled steps: {rate} (with the profiler's overhead)\n")
    cpu = sum(ms for _, ms, _ in result.ops)
    top = [
        {
            "aten op (top 10 by self CPU, all threads)": name,
            "ms/step": f"{ms:.2f}",
            "share": f"{100 * ms / cpu:.1f}%",
            "calls/step": f"{n:.0f}",
        }
        for name, ms, n in result.ops[:10]
    ]
    print_table(top)


def main() -> None:
    real = real_matrix()
    if real is None:
        log.info("no %s: profiling a synthetic matrix (run `make features`)", DEFAULT.features)
        data, source = synthetic_matrix(SYNTHETIC_ROWS), f"synthetic ({SYNTHETIC_ROWS:,} rows)"
    else:
        data, source = real, f"default train features ({len(real[0]):,} rows)"
    for precision in PRECISIONS:  # fp32, then the bf16 training step
        config = NeuralConfig(precision=precision)
        report(profile_steps(*data, config), f"{source}, precision {precision}")
