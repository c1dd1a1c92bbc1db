"""The torch profile of one pytest-ilp check, summarised for the scoring benchmark.

`profiled(function)` runs `function` under torch's CPU profiler and returns its result and the
operators that took the most time (self CPU time, share of the total), grouped into what a
reader of the benchmark needs: the body's matmuls, attention, elementwise kernels, and the
output layer's reductions (logsumexp, top-2, gather).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: operator name -> group (the rest count as "other").
GROUPS = {
    "aten::mm": "matmul",
    "aten::addmm": "matmul",
    "aten::bmm": "matmul",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::_scaled_dot_product_attention_math": "attention",
    "aten::topk": "output reductions",
    "aten::exp_": "output reductions",
    "aten::exp": "output reductions",
    "aten::sub": "output reductions",
    "aten::sum": "output reductions",
    "aten::log_": "output reductions",
    "aten::amax": "output reductions",
    "aten::gather": "output reductions",
    "aten::mul": "elementwise",
    "aten::silu": "elementwise",
    "aten::add": "elementwise",
    "aten::pow": "elementwise",
    "aten::rsqrt": "elementwise",
    "aten::mean": "elementwise",
    "aten::neg": "elementwise",
    "aten::cat": "copies",
    "aten::copy_": "copies",
    "aten::index": "copies",
    "aten::index_select": "copies",
    "aten::clone": "copies",
}


def profiled(function: Callable[[], Any], top: int = 8) -> tuple[Any, list[str]]:
    """`function()` under torch's profiler, and lines: the share of each group and of the
    `top` operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = function()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    groups: dict[str, float] = {}
    for event in events:
        group = GROUPS.get(event.key, "other")
        groups[group] = groups.get(group, 0.0) + event.self_cpu_time_total
    lines = [
        f"profile of one check (torch profiler, self CPU time {total / 1e6:.1f} s): "
        + ", ".join(
            f"{name} {time / total:.0%}"
            for name, time in sorted(groups.items(), key=lambda item: -item[1])
        )
    ]
    events.sort(key=lambda e: -e.self_cpu_time_total)
    for event in events[:top]:
        lines.append(
            f"  {event.key:<50} {event.self_cpu_time_total / 1e6:8.2f} s "
            f"{event.self_cpu_time_total / total:5.1%}  {event.count} calls"
        )
    return result, lines
