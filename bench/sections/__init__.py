"""The sections of ``python -m bench.run``, one module each, in the order they run and are
reported. Each ``bench_<section>(p, device, tmp)`` returns its result rows."""

SECTIONS = ("train", "peer", "data", "upscale", "eval", "scaling", "gpu")
