"""sr-train out of accelerator memory: one line naming what to lower, and last.ckpt at the last
intact state (saved like a stop signal does, never half-written, never a half-updated state).

No real CUDA OOM can happen on the CPU test machine, so it is injected where a real one
happens: in the forward pass (a loss term) and in the middle of an optimizer step (an Adam
that updates one tensor, then raises), with torch's own exception class and message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sr_cli.errors import OutOfMemory
from sr_cli.losses.base import LossTerm
from sr_cli.train.training import train
from tests.commands.test_sr_train import TINY_CLI, run_cli

REPO = Path(__file__).resolve().parents[2]
COMMON = ["loss=[l1]", "val.save_images=0"]
MESSAGE = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB "
    "of which 1.25 GiB is free. Including non-PyTorch memory, this process has 77.9 GiB in use."
)


class OOMAtStep(LossTerm):
    """Adds nothing to the objective; runs out of memory at iteration ``at``."""

    def __init__(self, at: int, weight: float = 1.0) -> None:
        super().__init__(weight)
        self.at = int(at)

    def compute(self, inputs):
        if inputs.step == self.at:
            raise torch.OutOfMemoryError(MESSAGE)
        return (inputs.sr * 0.0).mean()


class AdamOOMMidStep(torch.optim.Adam):
    """Adam that, at its step ``oom_at``, updates its first parameter and then runs out of
    memory (as allocating the state of the next tensor would)."""

    def __init__(self, params, oom_at: int = -1, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.oom_at, self.steps = int(oom_at), 0

    @torch.no_grad()
    def step(self, closure=None):
        if self.steps == self.oom_at:
            with torch.enable_grad():
                closure()  # Lightning's closure: forward, backward, on_before_optimizer_step
            first = self.param_groups[0]["params"][0]
            first.add_(first.grad, alpha=-1.0)
            raise torch.OutOfMemoryError(MESSAGE)
        self.steps += 1
        return super().step(closure)


def _iteration(path: Path) -> int:
    return int(torch.load(path, weights_only=True, map_location="cpu")["sr_cli"]["iteration"])


def _same_weights(a: Path, b: Path) -> bool:
    sa = torch.load(a, weights_only=True, map_location="cpu")["state_dict"]
    sb = torch.load(b, weights_only=True, map_location="cpu")["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_oom_in_training_is_one_line_and_last_ckpt_holds_the_state(tmp_path, val_subset, tiny_cfg):
    """The real command runs out of memory at iteration 3 (validation saved iteration 2): it
    exits with 2 and one line naming the options, after saving iteration 3, which resumes
    exactly."""
    run_dir = tmp_path / "oom"
    oom = ["+loss.oom._target_=tests.train.test_out_of_memory.OOMAtStep"]
    res = run_cli(
        ["experiment=demo", "model.pretrained=null", *TINY_CLI, *COMMON,
         "data.iters_per_epoch=2", "trainer.max_steps=10", f"data.val_dir={val_subset}",
         *oom, "+loss.oom.at=3", f"hydra.run.dir={run_dir}"],
        tmp_path,
        env_extra={"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert len(errors) == 1 and errors[0] == (
        "sr-train: error: CUDA out of memory (tried to allocate 2.00 GiB) while training at "
        "iteration 3; lower data.batch_size (now 2) or data.patch_size (now 32), or use "
        f"trainer.precision=bf16-mixed (now 32-true); {last} saved at iteration 3; continue "
        f"with resume={last} and the new values."
    )
    assert _iteration(last) == 3
    names = sorted(p.name for p in last.parent.iterdir())
    assert not [n for n in names if n.endswith((".tmp", ".partial")) or n.startswith(".")], names
    # The saved state resumes exactly: 3 + 1 iterations equal 4 in one go.
    common = [*COMMON, f"data.val_dir={val_subset}", *oom, "+loss.oom.at=99"]
    _, resumed = train(tiny_cfg(*common, "trainer.max_steps=4", f"resume={last}"))
    _, straight = train(tiny_cfg(*common, "trainer.max_steps=4", out=tmp_path / "four"))
    a, b = straight["module"].state_dict(), resumed["module"].state_dict()
    assert resumed["module"].iteration == 4 and all(torch.equal(a[k], b[k]) for k in a)


def test_oom_in_the_middle_of_a_weight_update_keeps_the_previous_state(
    tiny_cfg, val_subset, tmp_path
):
    """Memory runs out after the optimizer changed one tensor: that state is not saved, and
    last.ckpt stays the one validation wrote at iteration 2."""
    out = tmp_path / "mid"
    cfg = tiny_cfg(
        *COMMON,
        f"data.val_dir={val_subset}",
        "trainer.max_steps=10",
        "trainer.precision=bf16-mixed",
        "optim.generator._target_=tests.train.test_out_of_memory.AdamOOMMidStep",
        "+optim.generator.oom_at=3",
        out=out,
    )
    last = out / "checkpoints" / "last.ckpt"
    with pytest.raises(OutOfMemory) as info:
        train(cfg)
    assert str(info.value) == (
        "CUDA out of memory (tried to allocate 2.00 GiB) while training at iteration 3; lower "
        "data.batch_size (now 2) or data.patch_size (now 32); the weights were being updated, "
        f"so this state is not saved; {last} keeps iteration 2; continue with resume={last} "
        "and the new values."
    )  # bf16-mixed already: no precision advice
    assert _iteration(last) == 2
    assert not (out / "checkpoints" / "iter_0000003.ckpt").exists()
    train(tiny_cfg(*COMMON, f"data.val_dir={val_subset}", "trainer.max_steps=2",
                   "trainer.precision=bf16-mixed", out=tmp_path / "two"))  # fmt: skip
    assert _same_weights(last, tmp_path / "two" / "checkpoints" / "last.ckpt")
