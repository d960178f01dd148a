"""Peak bytes of tensor memory a call allocates on CPU, from the allocator events torch's profiler records."""

from __future__ import annotations

from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile


def peak_allocated_bytes(fn) -> tuple[int, object]:
    """``(peak, fn())``: the largest amount of CPU tensor memory live at once during ``fn`` beyond what was live
    before it (memory freed during the call counts negatively, so dropping inputs as they are consumed shows)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if event.tag == _EventType.Allocation and str(event.extra_fields.device) == "cpu":
            events.append((event.start_time_ns, event.extra_fields.alloc_size))
    live = peak = 0
    for _, size in sorted(events, key=lambda e: e[0]):
        live += size
        peak = max(peak, live)
    return peak, out
