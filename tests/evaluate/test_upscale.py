"""sr-upscale and tiled inference: seamless tiles, alpha, 16 bits, inputs never overwritten."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sr_cli.commands.upscale import main
from sr_cli.degradations.resize import imresize
from sr_cli.evaluate.inference import load_generator, super_resolve
from sr_cli.evaluate.picture_io import read_picture, write_png16
from sr_cli.evaluate.tiling import feather, tile_layout, tile_starts, tiled_forward
from sr_cli.evaluate.upscaling import plan_outputs


@pytest.fixture(scope="module")
def generator(trained_run):
    loaded = load_generator(trained_run / "checkpoints" / "last.ckpt")
    assert type(loaded.generator).__name__ == "RRDBNet"  # fully convolutional
    return loaded.generator, loaded.scale


def test_tile_layout():
    assert tile_starts(100, 48, 16) == [0, 28, 56]
    assert tile_starts(40, 48, 16) == [0]
    w = feather(20, 6, before=True, after=False)
    assert (w > 0).all() and torch.all(w[6:] == 1) and torch.all(w[:6] < 1)
    assert torch.all(w[:6].diff() > 0)


def test_tile_layout_is_an_even_split_with_the_fewest_tiles():
    import math

    for length in range(1, 700, 7):
        for tile, overlap in [(48, 16), (64, 0), (256, 16), (100, 99), (40, 24)]:
            size, starts = tile_layout(length, tile, overlap)
            assert size <= tile and starts[0] == 0 and starts[-1] + size == length
            gaps = [b - a for a, b in zip(starts, starts[1:])]
            assert all(size - g >= overlap for g in gaps)  # every neighbour overlaps enough
            assert not gaps or max(gaps) - min(gaps) <= 1  # evenly spread
            # The fewest tiles of side `tile` that cover the side with this overlap.
            fewest = 1 if length <= tile else math.ceil((length - overlap) / (tile - overlap))
            assert len(starts) == fewest
    # A 500-px side with the sr-upscale defaults: 3 tiles of 178 px (1.07x the pixels), not 256.
    assert tile_layout(500, 256, 16) == (178, [0, 161, 322])


# The overlap must cover the network's effective receptive field: the fixture's generator is the
# trained (warm-started) small RRDBNet, whose tiles differ by up to 4.6 levels at 10-12 px of
# overlap on noise input, and by less than one level from 24 px on.
@pytest.mark.parametrize("tile,overlap", [(40, 24), (40, 28)])
def test_tiled_equals_untiled(generator, tile, overlap):
    net, scale = generator
    lq = torch.rand(1, 3, 44, 58, generator=torch.Generator().manual_seed(0))
    full = super_resolve(net, lq)
    tiled = tiled_forward(lambda x: super_resolve(net, x), lq, scale, tile, overlap)
    assert tiled.shape == full.shape == (1, 3, 44 * scale, 58 * scale)
    assert (tiled - full).abs().max().item() < 1 / 255


def _rgba16(path, h=14, w=18, seed=0):
    rng = np.random.default_rng(seed)
    arr = (rng.random((h, w, 4)) * 65535).astype(np.uint16)
    write_png16(arr, path)
    return arr


def test_alpha_and_16_bits_are_kept(trained_run, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    arr16 = _rgba16(src / "rgba16.png")
    Image.fromarray(np.full((10, 12, 4), 200, np.uint8)).save(src / "rgba8.png")
    Image.fromarray(np.arange(12 * 10, dtype=np.uint16).reshape(10, 12) * 500).save(
        src / "gray16.png"
    )
    main([str(trained_run), str(src), "--tile", "8", "--overlap", "4", "-q"])
    out = tmp_path / "in_x4"  # default output folder
    p16 = read_picture(out / "rgba16.png")
    assert p16.bits == 16 and p16.alpha is not None and p16.rgb.shape == (56, 72, 3)
    # Alpha: MATLAB bicubic upscaling of the input alpha, at 16-bit precision.
    ref = imresize(torch.from_numpy(arr16[..., 3].astype(np.float32) / 65535), size=(56, 72))
    assert np.abs(p16.alpha - ref.clamp(0, 1).numpy()).max() < 1 / 65535 + 1e-6
    # The file really holds 16 bits per sample (values off the 8-bit grid exist).
    raw = np.round(p16.rgb * 65535).astype(np.int64)
    assert (raw % 257 != 0).any()
    p8 = Image.open(out / "rgba8.png")
    assert p8.mode == "RGBA" and p8.size == (48, 40)
    assert np.all(np.asarray(p8)[..., 3] == 200)
    g16 = Image.open(out / "gray16.png")
    assert g16.mode == "I;16" and g16.size == (48, 40)


def test_tiled_cli_matches_untiled_cli(trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # image files go to ./upscaled/ by default
    img = tmp_path / "photo.png"
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((64, 56, 3)) * 255).astype(np.uint8)).save(img)
    main([str(trained_run), str(img), "--tile", "0", "-o", str(tmp_path / "full.png"), "-q"])
    # overlap covering the trained generator's receptive field (see test_tiled_equals_untiled)
    main([str(trained_run), str(img), "--tile", "40", "--overlap", "24", "-q"])
    full = np.asarray(Image.open(tmp_path / "full.png")).astype(int)
    tiled = np.asarray(Image.open(tmp_path / "upscaled" / "photo.png")).astype(int)  # default
    assert full.shape == tiled.shape == (256, 224, 3)
    assert np.abs(full - tiled).max() <= 1


def test_never_overwrites_an_input(trained_run, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    before = (folder / "a.png").read_bytes()
    for args in (
        [str(folder / "a.png"), "-o", str(folder / "a.png")],  # output file == input
        [str(folder), "-o", str(folder)],  # output folder == input folder, no suffix
        [str(folder / "a.png"), "-o", str(folder), "--suffix", ""],
    ):
        with pytest.raises(SystemExit) as info:
            main([str(trained_run), *args, "-q"])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("sr-upscale: error:") and "Traceback" not in err
    assert (folder / "a.png").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["a.png"]
    # With a suffix, writing next to the inputs is fine.
    pairs = plan_outputs([folder], folder, 4, suffix="_sr")
    assert pairs == [(folder / "a.png", folder / "a_sr.png")]


def test_half_precision_needs_cuda(trained_run, tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    if torch.cuda.is_available():
        pytest.skip("CUDA present: half precision is allowed")
    with pytest.raises(SystemExit):
        main([str(trained_run), str(img), "--precision", "fp16", "--device", "cpu", "-q"])
    assert "CUDA" in capsys.readouterr().err


def test_default_outputs_go_to_new_folders_never_beside_inputs(trained_run, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for p in (data / "a.png", data / "b.jpg", data / "sub" / "c.png"):
        Image.fromarray((rng.random((9, 11, 3)) * 255).astype(np.uint8)).save(p)
    before = sorted(p.relative_to(tmp_path) for p in data.rglob("*"))
    main([str(trained_run), str(data / "a.png"), str(data / "sub" / "c.png"), "-q"])
    assert sorted(p.name for p in (work / "upscaled").iterdir()) == ["a.png", "c.png"]
    assert Image.open(work / "upscaled" / "a.png").size == (44, 36)
    main([str(trained_run), str(data), "-q", "--tile", "0"])
    assert sorted(p.name for p in (tmp_path / "data_x4").iterdir()) == ["a.png", "b.jpg"]
    assert sorted(p.relative_to(tmp_path) for p in data.rglob("*")) == before  # untouched
    monkeypatch.chdir(data)  # "." is a folder like any other: the new folder goes beside it
    main([str(trained_run), ".", "-q", "--tile", "0"])
    assert (tmp_path / "data_x4" / "a.png").is_file()
    assert sorted(p.relative_to(tmp_path) for p in data.rglob("*")) == before
    # An explicit --output keeps its meaning.
    main([str(trained_run), str(data / "a.png"), "-o", str(tmp_path / "x.png"), "-q"])
    assert Image.open(tmp_path / "x.png").size == (44, 36)


def test_jpeg_quality_default_95_and_option(trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "photo.jpg"
    rng = np.random.default_rng(3)
    Image.fromarray((rng.random((12, 10, 3)) * 255).astype(np.uint8)).save(src, quality=50)

    def tables(quality):
        ref = tmp_path / f"ref{quality}.jpg"
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(ref, quality=quality)
        return Image.open(ref).quantization

    main([str(trained_run), str(src), "-q"])
    assert Image.open(tmp_path / "upscaled" / "photo.jpg").quantization == tables(95)
    main([str(trained_run), str(src), "-q", "--quality", "70", "-o", str(tmp_path / "q70.jpg")])
    assert Image.open(tmp_path / "q70.jpg").quantization == tables(70) != tables(95)


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--tile", "-5"], "--tile -5 is negative"),
        (["--overlap", "-1", "--tile", "0"], "--overlap -1 is negative"),
        (["--tile", "8", "--overlap", "8"], "--overlap 8 must be smaller than --tile 8"),
        (["--tile", "8", "--overlap", "20"], "--overlap 20 must be smaller than --tile 8"),
        (["--quality", "0"], "--quality 0 is out of range"),
        (["--quality", "101"], "--quality 101 is out of range"),
        (["--max-pixels", "-1"], "--max-pixels=-1 is not a pixel count"),
    ],
)
def test_bad_numeric_options_are_one_line_errors(tmp_path, capsys, args, expected):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "missing.ckpt"), str(img), *args, "-q"])  # checked first
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sr-upscale: error:") and expected in err and err.count("\n") == 1


def test_bombs_are_refused_before_decoding_and_before_any_output(trained_run, tmp_path, capsys):
    from tests.data.bombs import header_bomb, zero_bomb

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    zero_bomb(folder / "b_zeros.png")
    for args in ([str(folder)], [str(header_bomb(tmp_path / "claims.png")), "-o", str(tmp_path)]):
        with pytest.raises(SystemExit) as info:
            main([str(trained_run), *args, "-q"])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("sr-upscale: error:") and err.count("\n") == 1
        assert "--max-pixels" in err and ("b_zeros.png" in err or "claims.png" in err)
    assert not (tmp_path / "in_x4").exists()  # the good image first was not written either
    # The limit is the user's: a lower one refuses an ordinary image.
    with pytest.raises(SystemExit):
        main([str(trained_run), str(folder / "a.png"), "--max-pixels", "63", "-q"])
    assert "8x8 = 64 pixels, over the limit of 63" in capsys.readouterr().err
