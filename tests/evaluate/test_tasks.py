"""Task-based evaluation: ``sr-eval task=classification data=<folder>``.

The classifier is torchvision's ResNet-18 with generated weights (a seeded random init saved as
``resnet18-f37072fd.pth`` in a temporary torch hub cache). The labelled set is built so that the
expected numbers are known: each image's class folder is the class this very network predicts
for the HR image, so HR scores 100% top-1 and top-5 by construction, and a constant image, which
the network gives one class, scores only the share of images in that class.
"""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from sr_cli.data import SAMPLES_DIR
from sr_cli.evaluate import tasks
from sr_cli.evaluate.tasks import HR, bootstrap_indices, get_task, task_names
from sr_cli.evaluate.tasks.classification import build, class_index, score
from tests.evaluate.test_eval import compose_eval

OPTIONS = {"classifier": "resnet18", "weights": "IMAGENET1K_V1"}


@pytest.fixture
def resnet_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, home / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return home


def crops() -> list[tuple[str, np.ndarray]]:
    """Twelve 64x64 crops of the bundled images (multiples of the scale)."""
    out = []
    for path in sorted((SAMPLES_DIR / "train").glob("*.png"))[:6]:
        img = np.asarray(Image.open(path).convert("RGB"))
        out += [(f"{path.stem}_a", img[:64, :64]), (f"{path.stem}_b", img[64:128, 64:128])]
    return out


@pytest.fixture
def labelled_set(tmp_path, resnet_home) -> Path:
    """Class folders named by the generated network's own HR prediction."""
    classifier = build(OPTIONS)
    root = tmp_path / "labelled"
    for name, img in crops():
        x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255
        label = int(classifier.logits(x).argmax())
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / str(label) / f"{name}.png")
    assert len(list(root.iterdir())) >= 2, "the generated network must separate some images"
    return root


def test_scores_against_known_values_hr_and_a_constant_image(labelled_set):
    classifier = build(OPTIONS)
    files = sorted(labelled_set.glob("*/*.png"))
    labels = [int(p.parent.name) for p in files]
    hr = [score(classifier, _load(p), [y]) for p, y in zip(files, labels)]
    assert all(float(s["top1"]) == 1.0 and float(s["top5"]) == 1.0 for s in hr)
    grey = torch.full((1, 3, 64, 64), 0.5)
    constant_class = int(classifier.logits(grey).argmax())
    constant = [float(score(classifier, grey, [y])["top1"]) for y in labels]
    assert np.mean(constant) == pytest.approx(np.mean([y == constant_class for y in labels]))
    assert np.mean(constant) < 1.0 <= np.mean([float(s["top1"]) for s in hr])


def _load(path: Path) -> torch.Tensor:
    return (
        torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy())
        .permute(2, 0, 1)[None]
        .float()
        / 255
    )


def test_sr_eval_task_classification(trained_run, labelled_set, tmp_path):
    from sr_cli.commands.eval import _run

    out = tmp_path / "task"
    cfg = compose_eval(
        [
            "task=classification",
            f"task_data={labelled_set}",
            f"checkpoints=[{trained_run}]",
            "task_options.classifier=resnet18",
            "task_options.weights=IMAGENET1K_V1",
            "task_options.bootstrap=200",
        ],
        out,
    )
    _run(cfg)
    rows = {
        (r["version"], r["measure"]): r
        for r in csv.DictReader(open(out / "task_classification.csv"))
    }
    model = f"{trained_run.name}/last"  # a run folder is scored through last.ckpt
    assert {v for v, _ in rows} == {HR, "bicubic", model}
    hr = rows[(HR, "top1")]
    assert float(hr["mean"]) == 1.0 and float(hr["drop"]) == 0.0
    assert float(hr["ci_low"]) == float(hr["ci_high"]) == 1.0
    for version in ("bicubic", model):
        for measure in ("top1", "top5"):
            r = rows[(version, measure)]
            mean, drop = float(r["mean"]), float(r["drop"])
            assert float(rows[(HR, measure)]["mean"]) >= mean  # HR scores at least as well
            assert drop == pytest.approx(float(rows[(HR, measure)]["mean"]) - mean)
            assert float(r["ci_low"]) <= mean <= float(r["ci_high"])
            assert float(r["drop_ci_low"]) <= drop <= float(r["drop_ci_high"])
    per_image = list(csv.DictReader(open(out / "task_classification_per_image.csv")))
    assert len(per_image) == 12 and all(r["HR/top1"] == "1.000000" for r in per_image)
    md = (out / "task_classification.md").read_text()
    assert "resnet18" in md and "bootstrap" in md


def test_missing_classifier_weights_is_one_line(tmp_path, monkeypatch, labelled_set, trained_run):
    from tests.evaluate.conftest import run_script

    empty = tmp_path / "empty_home"
    empty.mkdir()
    proc = run_script(
        "sr-eval",
        [
            "task=classification",
            f"data={labelled_set}",
            f"checkpoints=[{trained_run}]",
            "logger=none",
            f"output_dir={tmp_path / 'o'}",
        ],
        cwd=tmp_path,
        env_extra={"TORCH_HOME": str(empty)},
    )
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "resnet50-11ad3fa6.pth" in err[0] and str(empty) in err[0]
    assert "Traceback" not in proc.stderr


def test_class_folders_by_index_or_name():
    cats = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"]
    assert class_index("1", cats) == 1
    assert class_index("Great_White_Shark", cats) == 2
    from sr_cli.errors import DataError

    with pytest.raises(DataError, match="rename it"):
        class_index("not_a_class", cats)


def test_a_second_task_is_one_file(tmp_path, monkeypatch, trained_run):
    """A task defined in one module of the tasks folder (here a stand-in folder added to the
    package's path) is found by name and run by sr-eval."""
    folder = tmp_path / "more_tasks"
    folder.mkdir()
    (folder / "brightness.py").write_text(
        textwrap.dedent(
            """
            from sr_cli.evaluate.tasks import LabelledImage, Task
            from sr_cli.data import SAMPLES_DIR

            def list_items(folder, options):
                return [LabelledImage(p, 0.5, p.stem) for p in sorted((SAMPLES_DIR / "val").glob("*.png"))]

            def score(scorer, images, labels):
                return {"close": 1.0 - (images.mean(dim=(1, 2, 3)) - labels[0]).abs()}

            TASK = Task("brightness", ("close",), list_items, lambda o: None, score)
            """
        )
    )
    monkeypatch.setattr(tasks, "__path__", [*tasks.__path__, str(folder)])
    assert "brightness" in task_names() and "classification" in task_names()
    assert get_task("brightness").measures == ("close",)
    from sr_cli.commands.eval import _run

    out = tmp_path / "b"
    cfg = compose_eval(["task=brightness", "task_data=unused", f"checkpoints=[{trained_run}]"], out)
    _run(cfg)
    assert (out / "task_brightness.csv").is_file()


def test_unknown_task_lists_the_tasks():
    from sr_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="classification"):
        get_task("detection")


def test_data_is_rewritten_for_the_task():
    from sr_cli.commands.eval import rewrite_task_data

    assert rewrite_task_data(["task=classification", "data=/x", "seed=1"]) == [
        "task=classification",
        "task_data=/x",
        "seed=1",
    ]


def test_bootstrap_is_seeded():
    assert torch.equal(bootstrap_indices(5, 3, 1), bootstrap_indices(5, 3, 1))


def test_task_outputs_checked_before_anything_is_computed(
    trained_run, labelled_set, tmp_path, capsys
):
    """A task table that is a folder is one line before the classifier runs; nothing written."""
    from sr_cli.commands.eval import _run

    out = tmp_path / "task"
    (out / "task_classification_per_image.csv").mkdir(parents=True)
    cfg = compose_eval(
        ["task=classification", f"task_data={labelled_set}", f"checkpoints=[{trained_run}]",
         "task_options.classifier=resnet18", "task_options.weights=IMAGENET1K_V1"],
        out,
    )  # fmt: skip
    with pytest.raises(SystemExit) as info:
        _run(cfg)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sr-eval: error: ") and err.count("\n") == 1, err
    assert "task_classification_per_image.csv" in err and "is a folder" in err
    assert sorted(p.name for p in out.iterdir()) == ["task_classification_per_image.csv"]
