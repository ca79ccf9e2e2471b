"""The weights detector: every sr-cli architecture, in every published layout, rebuilt from the
file alone with the native model's exact output; metadata first, and never code.

Each case builds sr-cli's native module at a non-default size, writes its state dict the way
published files store it (BasicSR's ``params``/``params_ema`` container, the original release's
key names where they differ, safetensors; the foreign key names are written out by hand here),
loads it through :func:`sr_cli.models.detect.load_weights` (what sr-upscale, sr-eval,
sr-export, sr-report and sr-rate use) and compares outputs bit for bit.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import save_file

from sr_cli.errors import CheckpointError, ConfigError
from sr_cli.evaluate.inference import load_generator
from sr_cli.models.common import final_output
from sr_cli.models.dbpn import DBPN
from sr_cli.models.detect import load_into, load_weights
from sr_cli.models.edsr import EDSR, edsr
from sr_cli.models.espcn import ESPCN
from sr_cli.models.fsrcnn import FSRCNN
from sr_cli.models.lapsrn import LapSRN
from sr_cli.models.metadata import PTH_KEY, generator_metadata
from sr_cli.models.rcan import RCAN
from sr_cli.models.rrdbnet import RRDBNet, rrdbnet
from sr_cli.models.srcnn import SRCNN
from sr_cli.models.srresnet import MSRResNet
from sr_cli.models.swinir import SwinIR
from sr_cli.models.vdsr import VDSR
from tests.models.test_pretrained import to_original_edsr, to_original_esrgan


def native(cls, seed=0, **kw):
    """sr-cli's module with every parameter perturbed (non-zero biases, varied slopes)."""
    torch.manual_seed(seed)
    net = cls(**kw).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return net


def rename(sd, table):
    """Keys renamed by ``(pattern, replacement)`` pairs, the first that matches."""
    out = {}
    for k, v in sd.items():
        for pat, rep in table:
            if re.match(pat, k):
                k = re.sub(pat, rep, k)
                break
        out[k] = v
    return out


# ------------------------------------------------------- published layouts, written by hand
def old_rrdb(sd, **_):
    return rename(
        sd,
        [
            (r"^body\.(\d+)\.rdb(\d)\.", r"RRDB_trunk.\1.RDB\2."),
            (r"^conv_body\.", "trunk_conv."),
            (r"^conv_up(\d)\.", r"upconv\1."),
            (r"^conv_hr\.", "HRconv."),
        ],
    )


def old_msrresnet(sd, **_):
    return rename(sd, [(r"^body\.", "recon_trunk."), (r"^conv_hr\.", "HRconv.")])


def original_rcan(sd, num_group, num_block, **_):
    out = rename(
        sd,
        [
            (r"^body\.(\d+)\.residual_group\.(\d+)\.rcab\.([02])\.", r"body.\1.body.\2.body.\3."),
            (r"^body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.1\.", r"body.\1.body.\2.body.3.conv_du.0."),
            (r"^body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.3\.", r"body.\1.body.\2.body.3.conv_du.2."),
            (r"^body\.(\d+)\.conv\.", rf"body.\1.body.{num_block}."),
            (r"^conv_after_body\.", f"body.{num_group}."),
            (r"^conv_first\.", "head.0."),
            (r"^upsample\.", "tail.0."),
            (r"^conv_last\.", "tail.1."),
        ],
    )  # fmt: skip
    for m in ("sub_mean", "add_mean"):  # MeanShift constants, not used by sr-cli
        out[f"{m}.weight"], out[f"{m}.bias"] = torch.eye(3).view(3, 3, 1, 1), torch.rand(3)
    return out


def yjn870_fsrcnn(sd, m, **_):
    table = [(r"^feature\.", "first_part."), (r"^shrink\.(\d)\.", r"mid_part.\1."),
             (r"^upsample\.0\.", "last_part.")]  # fmt: skip
    for i in range(m):
        table += [(rf"^mapping\.{i}\.0\.", f"mid_part.{2 + 2 * i}."),
                  (rf"^mapping\.{i}\.1\.", f"mid_part.{3 + 2 * i}.")]  # fmt: skip
    table += [
        (r"^expand\.0\.", f"mid_part.{2 + 2 * m}."),
        (r"^expand\.1\.", f"mid_part.{3 + 2 * m}."),
    ]
    return rename(sd, table)


def yjn870_espcn(sd, **_):
    return rename(
        sd,
        [(r"^conv1\.", "first_part.0."), (r"^conv2\.", "first_part.2."),
         (r"^upsample\.0\.", "last_part.0.")],
    )  # fmt: skip


def twtygqyy_vdsr(sd, **_):
    out = {}
    for k, v in rename(sd, [(r"^conv_first\.", "input."), (r"^conv_last\.", "output.")]).items():
        if m := re.match(r"^body\.(\d+)\.(\w+)$", k):
            k = f"residual_layer.{int(m[1]) // 2}.conv.{m[2]}"
        out[k] = v
    return out


def dbpn_release(sd, **_):
    return {f"module.{k}": v for k, v in sd.items()}  # saved from DataParallel


def official_swinir(sd, depths, window_size, **_):
    """The official release also stores two derivable buffers per block (their values are
    not used)."""
    out, n = dict(sd), window_size * window_size
    for i, depth in enumerate(depths):
        for j in range(depth):
            out[f"layers.{i}.residual_group.blocks.{j}.attn.relative_position_index"] = torch.zeros(
                n, n, dtype=torch.long
            )
            if j % 2:
                out[f"layers.{i}.residual_group.blocks.{j}.attn_mask"] = torch.zeros(64, n, n)
    return out


def esrgan_original(sd, num_block, **_):
    return to_original_esrgan(sd, num_block)


def edsr_original(sd, num_block, **_):
    return to_original_edsr(sd, num_block)


# (id, class, arguments at a non-default size, file name, extra layouts)
CASES = [
    ("msrresnet", MSRResNet, dict(scale=3, num_feat=20, num_block=3), "x.pth",
     [old_msrresnet]),
    ("edsr", EDSR, dict(scale=3, num_feat=24, num_block=3, img_range=255.0), "x.pth",
     [edsr_original]),
    ("rcan", RCAN, dict(scale=2, num_feat=24, num_group=2, num_block=3, reduction=4,
                        img_range=255.0), "x.pth", [original_rcan]),
    ("esrgan", RRDBNet, dict(scale=4, num_feat=24, num_block=3, num_grow_ch=12), "x.pth",
     [esrgan_original, old_rrdb]),
    ("esrgan_x2", RRDBNet, dict(scale=2, num_feat=16, num_block=1, num_grow_ch=8), "x.pth", []),
    ("esrgan_shuffle", RRDBNet, dict(scale=3, num_feat=16, num_block=1, num_grow_ch=8,
                                     upsampler="pixelshuffle"), "x.pth", []),
    ("srcnn", SRCNN, dict(scale=3, n1=10, n2=6, f1=7, f2=3, f3=3), "srcnn_x3.pth", []),
    ("vdsr", VDSR, dict(scale=2, num_feat=10, num_layers=5), "vdsr_x2.pth", [twtygqyy_vdsr]),
    ("espcn", ESPCN, dict(scale=3, n1=10, n2=6), "x.pth", [yjn870_espcn]),
    ("fsrcnn", FSRCNN, dict(scale=3, d=10, s=5, m=3), "fsrcnn_x3.pth", [yjn870_fsrcnn]),
    ("lapsrn", LapSRN, dict(scale=4, num_feat=10, depth=3), "x.pth", []),
    ("dbpn", DBPN, dict(scale=2, base_filter=8, feat=12, num_stages=3), "x.pth", [dbpn_release]),
    ("swinir", SwinIR, dict(scale=2, embed_dim=12, depths=(2, 3), num_heads=(2, 3),
                            window_size=4, mlp_ratio=1.5, num_feat=10), "x.pth",
     [official_swinir]),
    ("swinir_light", SwinIR, dict(scale=3, embed_dim=12, depths=(2,), num_heads=(3,),
                                  window_size=4, upsampler="pixelshuffledirect"), "x.pth",
     [official_swinir]),
]  # fmt: skip

NAMES = {
    "msrresnet": "MSRResNet", "edsr": "EDSR", "rcan": "RCAN", "esrgan": "ESRGAN",
    "esrgan_x2": "ESRGAN", "esrgan_shuffle": "ESRGAN", "srcnn": "SRCNN", "vdsr": "VDSR", "espcn": "ESPCN",
    "fsrcnn": "FSRCNN", "lapsrn": "LapSRN", "dbpn": "D-DBPN", "swinir": "SwinIR",
    "swinir_light": "SwinIR",
}  # fmt: skip

LAYOUTS = [
    pytest.param(case, layout, id=f"{case[0]}-{layout if isinstance(layout, str) else layout.__name__}")
    for case in CASES
    for layout in ["params", "params_ema", "safetensors", *case[4]]
]  # fmt: skip


def write(path, sd, container):
    if container == "safetensors":
        path = path.with_suffix(".safetensors")
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif container == "params_ema":  # BasicSR keeps both; the EMA is the one to use
        torch.save(
            {"params": {k: torch.zeros_like(v) for k, v in sd.items()}, "params_ema": sd}, path
        )
    else:
        torch.save({"params": sd}, path)
    return path


def same_output(a, b, x) -> bool:
    with torch.no_grad():
        return torch.equal(final_output(a(x)), final_output(b(x)))


@pytest.mark.parametrize(("case", "layout"), LAYOUTS)
def test_published_layout_is_rebuilt_with_the_native_output(tmp_path, case, layout):
    name, cls, kw, file_name, _ = case
    net = native(cls, **kw)
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    if callable(layout):
        sd, container = layout(sd, **kw), "params"
    else:
        container = layout
    path = write(tmp_path / file_name, sd, container)
    loaded = load_weights(path)
    assert loaded.model_config["architecture"] == NAMES[name]
    assert loaded.model_config["detected_from"] == "shapes" and loaded.scale == kw["scale"]
    assert loaded.used_ema == (container == "params_ema")
    x = torch.rand(1, 3, 11, 14, generator=torch.Generator().manual_seed(1))
    assert same_output(loaded.generator, net, x)
    # sr-eval / sr-upscale's entry point takes it too
    assert same_output(load_generator(path).generator, net, x)


# ------------------------------------------------------------------ metadata, and its safety
def small_esrgan_config(scale=4):
    return {
        "name": "esrgan",
        "preset": "small",
        "generator": {
            "_target_": "sr_cli.models.rrdbnet.rrdbnet",
            "scale": scale,
            "preset": "small",
        },
    }


def test_metadata_wins_over_the_shapes(tmp_path):
    """The small preset pads with the edge pixels, which no shape shows: only the metadata
    gives the native picture; the shapes alone would give another border."""
    net = native(rrdbnet, scale=4, preset="small")
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    with_meta = tmp_path / "g.safetensors"
    save_file(sd, str(with_meta), metadata=generator_metadata(small_esrgan_config(), 4))
    bare = tmp_path / "bare.safetensors"
    save_file(sd, str(bare))
    x = torch.rand(1, 3, 10, 12)
    loaded = load_weights(with_meta)
    assert loaded.model_config["detected_from"] == "metadata"
    assert same_output(loaded.generator, net, x)
    guessed = load_weights(bare)
    assert guessed.model_config["detected_from"] == "shapes" and not same_output(
        guessed.generator, net, x
    )
    # a .pth export carries it beside BasicSR's params
    pth = tmp_path / "g.pth"
    torch.save({"params": dict(sd), PTH_KEY: generator_metadata(small_esrgan_config(), 4)}, pth)
    assert same_output(load_weights(pth).generator, net, x)


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("sr_cli.models.pretrained.export_generator", "is not a generator"),
        ("sr_cli.models.pretrained.read_checkpoint", "is not a generator"),
        ("sr_cli.models.published.spandrel_generator", "is not a generator"),
        ("builtins.open", "only classes and factories"),
        ("os.system", "only classes and factories"),
    ],
)
def test_metadata_naming_anything_but_a_generator_is_refused(tmp_path, target, why):
    marker = tmp_path / "written.safetensors"
    ckpt = tmp_path / "run.ckpt"
    torch.save({"state_dict": {}, "sr_cli": {"model": small_esrgan_config(), "scale": 4}}, ckpt)
    bad = {"name": "x", "generator": {"_target_": target, "_args_": [str(ckpt), str(marker)]}}
    net = rrdbnet(scale=4, preset="small")
    for nested in (False, True):
        model = bad if not nested else {
            "name": "esrgan",
            "generator": {**small_esrgan_config()["generator"], "num_feat": bad["generator"]},
        }  # fmt: skip
        path = tmp_path / "evil.safetensors"
        sd = {k: v.contiguous() for k, v in net.state_dict().items()}
        save_file(sd, str(path), metadata=generator_metadata(model, 4))
        for load in (load_weights, load_generator, lambda p: load_into(rrdbnet(4, "small"), p)):
            with pytest.raises(CheckpointError, match=why) as info:
                load(path)
            assert "\n" not in str(info.value) and "evil.safetensors" in str(info.value)
    # the same description stored in an sr-train checkpoint is refused too
    evil_ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "sr_cli": {"model": bad, "scale": 4}}, evil_ckpt)
    with pytest.raises(CheckpointError, match=why):
        load_generator(evil_ckpt)
    assert not marker.exists()


def test_metadata_that_does_not_fit_the_tensors_says_where(tmp_path):
    net = native(rrdbnet, scale=4, preset="small")
    path = tmp_path / "g.safetensors"
    cfg = small_esrgan_config()
    cfg["generator"]["num_grow_ch"] = 8
    save_file(dict(net.state_dict()), str(path), metadata=generator_metadata(cfg, 4))
    with pytest.raises(
        CheckpointError, match=r"do not fit it: shape: body\.0\.rdb1\.conv1\.weight"
    ):
        load_weights(path)
    bad_json = {"format": "sr-cli generator", "model": "{not json", "scale": "4"}
    save_file(dict(net.state_dict()), str(path), metadata=bad_json)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_weights(path)


# ------------------------------------------------------------------ what a user reads
def test_unrecognised_file_lists_what_was_tried(tmp_path):
    path = tmp_path / "mystery.pth"
    torch.save({"foo.weight": torch.rand(3, 3), "bar.bias": torch.rand(3)}, path)
    with pytest.raises(CheckpointError) as info:
        load_weights(path)
    msg = str(info.value)
    assert "\n" not in msg and "not recognised" in msg and "mystery.pth" in msg
    assert "sr-cli metadata" in msg and "no key layout matched" in msg
    assert all(n in msg for n in ("MSRResNet", "EDSR", "RCAN", "ESRGAN", "SwinIR", "D-DBPN"))
    assert "spandrel: not recognised" in msg and "foo.weight" in msg


def test_a_recognised_family_that_does_not_fit_gives_the_whole_reason(tmp_path):
    """The issue's error ended at 'Error(s) in loading state_dict for RRDBNet:'."""
    sd = dict(native(RRDBNet, scale=4, num_feat=16, num_block=1, num_grow_ch=8).state_dict())
    sd["body.0.rdb2.conv3.weight"] = torch.rand(8, 16, 3, 3)  # one tensor of a wrong shape
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as info:
        load_weights(path)
    msg = str(info.value)
    assert "\n" not in msg and not msg.rstrip().endswith(":")
    assert (
        "ESRGAN (BasicSR layout): shape: body.0.rdb2.conv3.weight (8, 16, 3, 3) in the file" in msg
    )
    # spandrel's reason, summarised whole (its keys are the original ESRGAN's)
    assert "RRDBNet does not load these tensors: size mismatch for model.1.sub.0.RDB1" in msg


def test_scale_free_weights_take_the_scale_from_the_name_or_the_command(tmp_path):
    net = native(SRCNN, scale=3, n1=8, n2=4)
    path = tmp_path / "srcnn.pth"
    torch.save(net.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"do not say their scale.*srcnn_x4\.pth"):
        load_weights(path)
    assert load_weights(path, scale=3).scale == 3  # sr-eval scale=3
    named = tmp_path / "SRCNN_x3_91images.pth"
    torch.save(net.state_dict(), named)
    loaded = load_weights(named)
    assert loaded.scale == 3 and same_output(loaded.generator, net, torch.rand(1, 3, 9, 9))


# ------------------------------------------------------------------ sr-train model.pretrained=
def test_pretrained_must_match_the_configured_model(tmp_path):
    src = native(rrdbnet, scale=4, preset="small")
    path = tmp_path / "g.safetensors"
    save_file(
        dict(src.state_dict()), str(path), metadata=generator_metadata(small_esrgan_config(), 4)
    )
    dst = rrdbnet(4, "small")
    assert load_into(dst, path).how == "metadata"
    x = torch.rand(1, 3, 8, 8)
    assert same_output(dst.eval(), src, x)
    cases = [
        (rrdbnet(4, "paper"), "num_feat=32 in the file, 64 in the model"),
        (rrdbnet(4, "small", padding_mode="zeros"), "padding_mode='replicate' in the file"),
        (rrdbnet(2, "small"), "scale=4 in the file, 2 in the model. To use it, set scale=4"),
        (edsr(4, "small"), "holds ESRGAN weights .* model is EDSR: pick model=esrgan"),
    ]
    for model, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            load_into(model, path)
        assert "\n" not in str(info.value)
    bare = tmp_path / "bare.pth"  # no metadata: the shapes tell widths and depths
    torch.save({"params_ema": src.state_dict()}, bare)
    with pytest.raises(ConfigError, match="num_grow_ch=16 in the file, 32 in the model"):
        load_into(rrdbnet(4, "paper"), bare)


def test_pretrained_generator_snapshot_keeps_its_img_range(tmp_path):
    """An sr-cli EDSR snapshot (img_range 1, said in its metadata) is not mistaken for a
    published [0, 255] EDSR: model.pretrained= gives the same network."""
    src = native(edsr, scale=2, preset="small")
    cfg = {"name": "edsr", "generator": {"_target_": "sr_cli.models.edsr.edsr", "scale": 2,
                                         "preset": "small", "upsampler": "pixelshuffle"}}  # fmt: skip
    path = tmp_path / "last.generator.safetensors"
    save_file(dict(src.state_dict()), str(path), metadata=generator_metadata(cfg, 2))
    dst = edsr(scale=2, preset="small").eval()
    load_into(dst, path)
    assert same_output(dst, src, torch.rand(1, 3, 8, 8))


def test_metadata_json_is_plain_data():
    meta = generator_metadata(small_esrgan_config(), 4, iteration=7)
    assert meta["format"] == "sr-cli generator" and meta["iteration"] == "7"
    assert json.loads(meta["model"])["generator"]["preset"] == "small"
