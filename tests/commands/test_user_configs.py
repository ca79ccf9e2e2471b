"""The configs ship in the package (sr_cli/conf, conf/ is a symlink to it), and a user's own config
folder adds members to their groups: ``sr-train --config-dir my_conf model=my_model`` or
``hydra.searchpath=[file://my_conf]``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

import sr_cli
from sr_cli.config import config_dir, group_options, unknown_list_members, user_config_dirs
from tests.commands.test_sr_train import TINY_CLI, run_cli

REPO = Path(__file__).resolve().parents[2]

MY_MODEL = """\
# a user's variant of the bundled ESPCN: a wider small preset under its own name
defaults:
  - espcn
  - _self_
generator:
  upsampler: nearest+conv
"""
MY_LOSS = """\
my_l1:
  _target_: sr_cli.losses.pixel.L1Loss
  weight: 0.25
"""


def _user_conf(root: Path) -> Path:
    conf = root / "my_conf"
    (conf / "model").mkdir(parents=True)
    (conf / "loss").mkdir()
    (conf / "model" / "my_model.yaml").write_text(MY_MODEL)
    (conf / "loss" / "my_l1.yaml").write_text(MY_LOSS)
    return conf


def test_the_configs_are_package_data_and_conf_points_at_them():
    assert config_dir() == Path(sr_cli.__file__).resolve().parent / "conf"
    assert (REPO / "conf").is_symlink() and (REPO / "conf").resolve() == config_dir()
    assert (config_dir() / "study").is_dir()  # sr-study reads conf/study/*.yaml from here


def test_user_config_dirs_from_the_command_line(tmp_path):
    conf = _user_conf(tmp_path)
    args = ["--config-dir", str(conf), "-cd", "b", "--config-dir=c", f"hydra.searchpath=[file://{conf},pkg://sr_cli.conf]"]  # fmt: skip
    dirs = user_config_dirs(args)
    assert dirs[:4] == [conf, Path("b"), Path("c"), conf]
    assert dirs[4].resolve() == config_dir()
    assert "my_l1" in group_options("loss", [conf]) and "l1" in group_options("loss", [conf])
    assert unknown_list_members(["loss=[my_l1,l1]", "--config-dir", str(conf)]) is None
    assert "Could not find 'loss/my_l1'" in unknown_list_members(["loss=[my_l1]"])


def test_searchpath_adds_a_group_member(tmp_path):
    conf = _user_conf(tmp_path)
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"hydra.searchpath=[file://{conf}]", "model=my_model", "loss=[my_l1]"],
        )
    assert cfg.model.name == "espcn" and cfg.model.generator.upsampler == "nearest+conv"
    assert cfg.loss.my_l1.weight == 0.25


@pytest.mark.slow
def test_sr_train_with_a_user_config_dir(tmp_path):
    """A user config group member (model and loss) used by sr-train, run from another folder."""
    _user_conf(tmp_path)
    res = run_cli(
        [
            "--config-dir",
            "my_conf",
            "model=my_model",
            "loss=my_l1",
            "debug=fast",
            "hydra.run.dir=run",
            *TINY_CLI,
        ],
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = yaml.safe_load((tmp_path / "run" / "config_resolved.yaml").read_text())
    assert cfg["model"]["generator"]["upsampler"] == "nearest+conv"
    assert cfg["loss"] == {"my_l1": {"_target_": "sr_cli.losses.pixel.L1Loss", "weight": 0.25}}
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
