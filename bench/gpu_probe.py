"""Run one sr-cli command module in this process and record what it used (for ``gpu_check``).

    python -m bench.gpu_probe OUT.json sr_cli.commands.train [overrides...]

The command runs as ``python -m MODULE ARGS`` would (``runpy``, as ``__main__``; Lightning's
DDP launcher therefore starts its other ranks as ``python -m MODULE``). At exit, OUT.json gets
the peak CUDA memory allocated by this process (rank 0), its peak resident memory, and the
times of every optimizer step (a global ``torch.optim`` hook), from which ``gpu_check`` takes
the iteration rate.
"""

from __future__ import annotations

import atexit
import json
import resource
import runpy
import sys
import time

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook


def main() -> None:
    out, module, *args = sys.argv[1:]
    steps: dict[int, list[float]] = {}

    def on_step(optimizer, *_):
        steps.setdefault(id(optimizer), []).append(time.perf_counter())

    register_optimizer_step_post_hook(on_step)

    def dump() -> None:
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        record = {
            "cuda_peak_bytes": (
                max(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count()))
                if cuda
                else None
            ),
            "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "step_times": list(steps.values()),
        }
        with open(out, "w") as fh:
            json.dump(record, fh)

    atexit.register(dump)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
