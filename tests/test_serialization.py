"""Issue #26, "nothing run, nothing lost": destinations that are not regular files are refused,
never replaced; unreadable checkpoints are described in words; the values a checkpoint stores
for sr-cli are type-checked when it is opened."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import pytest
import torch

from sr_cli.errors import CheckpointError, ConfigError, one_line
from sr_cli.serialization import (
    atomic_torch_save,
    atomic_write_text,
    check_output_dir,
    check_output_file,
    file_problem,
    is_readable_checkpoint,
    safe_torch_load,
)


@pytest.fixture
def specials(tmp_path) -> dict[str, Path]:
    """Destinations that exist and are not regular files: a FIFO, a folder, links to devices."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    full = tmp_path / "full.safetensors"
    full.symlink_to("/dev/full")
    zero = tmp_path / "zero.ckpt"
    zero.symlink_to("/dev/zero")
    return {"fifo": fifo, "folder": folder, "dev_full": full, "dev_zero": zero}


@pytest.mark.parametrize("name", ["fifo", "folder", "dev_full", "dev_zero"])
def test_atomic_writes_refuse_what_is_not_a_regular_file(specials, name):
    target = specials[name]
    before = os.lstat(target)
    with pytest.raises(ConfigError, match="not a regular file") as info:
        atomic_torch_save({"x": torch.zeros(1)}, target)
    assert "\n" not in str(info.value) and str(target) in str(info.value)
    with pytest.raises(ConfigError, match="not a regular file"):
        atomic_write_text(target, "text")
    after = os.lstat(target)  # the same object, not replaced by a regular file
    assert (after.st_ino, stat.S_IFMT(after.st_mode)) == (
        before.st_ino,
        stat.S_IFMT(before.st_mode),
    )
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]


def test_check_output_file_names_the_option_and_what_is_there(specials):
    with pytest.raises(ConfigError) as info:
        check_output_file(specials["dev_full"], "-o")
    assert str(info.value).startswith(f"-o {str(specials['dev_full'])!r} is a symbolic link to")
    assert "a character device, not a regular file" in str(info.value)
    with pytest.raises(ConfigError, match="is a FIFO"):
        check_output_file(specials["fifo"], "-o")
    with pytest.raises(ConfigError, match="is a folder, not a regular file; .* file name inside"):
        check_output_file(specials["folder"], "-o")


def test_check_output_dir_refuses_a_file_on_the_way(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"'.*afile' is a regular file|not a folder"):
        check_output_dir(tmp_path / "afile" / "sub", "-o")
    check_output_dir(tmp_path / "new" / "deeper", "-o")  # fine, and nothing is created
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_one_line_keeps_every_line_and_is_never_empty():
    exc = RuntimeError("Error(s) in loading state_dict for X:\n\tsize mismatch for a\n\tand b")
    assert one_line(exc) == "Error(s) in loading state_dict for X: size mismatch for a and b"
    assert one_line(EOFError()) == "EOFError"
    assert one_line(KeyError(174812789)) == "KeyError: 174812789"


# ------------------------------------------------------------------ unreadable checkpoints
def _payload_free_pickle() -> bytes:
    return pickle.dumps(174812789, protocol=2)


JUNK = {
    "empty": (b"", "empty file (0 bytes)"),
    "text": (b"hello world, this is not a checkpoint\n" * 4, "not a zip archive or pickle"),
    "random": (bytes(range(7, 250)) * 8, "not a zip archive or pickle (1944 bytes; first bytes 07"),
    "zip": (b"PK\x03\x04" + bytes(200), "a damaged or truncated zip archive"),
    "pickle": (_payload_free_pickle(), "a pickle that is truncated, damaged or not a PyTorch"),
}


@pytest.mark.parametrize("kind", sorted(JUNK))
def test_unreadable_checkpoint_says_what_is_wrong_in_words(tmp_path, kind):
    data, expected = JUNK[kind]
    path = tmp_path / f"{kind}.pth"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        safe_torch_load(path)
    message = str(info.value)
    assert expected in message and "\n" not in message
    assert not message.rstrip(". ").endswith(":")  # never an empty reason
    # never a bare number or an empty reason after "file:"
    reason = message.split("is corrupt or not a PyTorch file:", 1)[1].strip()
    assert not reason.split(" ")[0].isdigit()


def test_symlink_to_a_device_is_not_called_missing(specials, tmp_path):
    with pytest.raises(CheckpointError) as info:
        safe_torch_load(specials["dev_zero"])
    assert "does not exist" not in str(info.value)
    assert "symbolic link to '/dev/zero', a character device, not a regular file" in str(info.value)
    assert file_problem(tmp_path / "nothing") == "does not exist"
    assert "a folder" in file_problem(specials["folder"])
    assert "not a regular file" in is_readable_checkpoint(specials["dev_zero"])
    assert is_readable_checkpoint(tmp_path / "x") == "it does not exist"


def test_unsafe_pickle_still_names_the_refused_global(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"params": {"w": torch.zeros(1)}, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="Unsupported global: GLOBAL .*open") as info:
        safe_torch_load(path)
    assert "loaded safely" in str(info.value) and not marker.exists()


# ------------------------------------------------------------------ stored sr-cli values
@pytest.mark.parametrize(
    "key,value,must",
    [
        ("scale", "${oc.env:HOME}", "not a positive integer"),
        ("scale", 0, "not a positive integer"),
        ("scale", True, "not a positive integer"),
        ("iteration", "12", "not an integer >= 0"),
        ("name", ["a"], "not a string"),
        ("model", "rrdbnet", "not a mapping"),
        ("ema", "yes", "not true or false"),
    ],
)
def test_stored_metadata_of_the_wrong_type_is_refused_on_open(tmp_path, key, value, must):
    path = tmp_path / "crafted.ckpt"
    meta = {"scale": 4, "iteration": 2, "name": "run", "model": {"generator": {}}, key: value}
    torch.save({"state_dict": {}, "sr_cli": meta}, path)
    with pytest.raises(CheckpointError) as info:
        safe_torch_load(path)
    assert f"its stored sr_cli.{key} is {value!r}" in str(info.value) and must in str(info.value)


def test_good_metadata_loads(tmp_path):
    path = tmp_path / "ok.ckpt"
    meta = {"scale": 4, "iteration": 0, "name": None, "model": {"generator": {"a": 1}}, "x": 1}
    torch.save({"sr_cli": meta}, path)
    assert safe_torch_load(path)["sr_cli"]["scale"] == 4
