"""The issue's headline mixes train end to end; missing VGG weights fail before training."""

from __future__ import annotations

from tests.commands.test_sr_train import TINY_CLI, run_cli


def test_l1_perceptual_gan_translational_trains(tiny_cfg, val_subset, vgg_cache):
    from sr_cli.train.training import train

    metrics, objects = train(
        tiny_cfg(
            "loss=[l1,perceptual,gan,translational]",
            "loss.translational.start_step=1",
            f"data.val_dir={val_subset}",
            "trainer.max_steps=2",
        )
    )
    for term in ("l1", "perceptual", "gan", "translational"):
        assert f"train/loss_{term}" in metrics, term
    assert not objects["module"].automatic_optimization


def test_missing_vgg_weights_fail_before_training(tmp_path):
    home = tmp_path / "torch_home"
    res = run_cli(
        ["loss=l1+perceptual", "debug=fast", f"hydra.run.dir={tmp_path}/run", *TINY_CLI],
        tmp_path,
        env_extra={"TORCH_HOME": str(home)},
        timeout=180,
    )
    assert res.returncode == 2
    assert "vgg19-dcbb9e9d.pth" in res.stderr
    assert str(home / "hub" / "checkpoints") in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained


def test_realesrgan_degradation_with_perceptual_gan(tiny_cfg, val_subset, vgg_cache):
    """The issue's `degradation=realesrgan model=esrgan loss=l1+perceptual+gan` (tiny budget)."""
    from sr_cli.train.training import train

    metrics, objects = train(
        tiny_cfg(
            "degradation=realesrgan",
            "model=esrgan",
            "loss=[l1,perceptual,gan]",
            f"data.val_dir={val_subset}",
        )
    )
    assert objects["module"].degradation.stochastic
    for key in ("train/loss_l1", "train/loss_perceptual", "train/loss_gan", "val/psnr_y"):
        assert key in metrics, key
