"""Every reader of metrics.csv keeps the readable rows and names each damaged one in one line."""

from __future__ import annotations

import logging

from sr_cli.metrics_csv import read_metrics_rows
from sr_cli.report.runs import read_metrics_csv
from sr_cli.train.pruning import read_curve
from sr_cli.train.sweep import _best_metrics, _iterations

GOOD = [b"0,0,0.5,", b"0,1,0.4,", b"0,1,,21.5", b"1,3,0.3,", b"1,3,,22.5"]


def _write(path, lines):
    path.write_bytes(b"\n".join([b"epoch,step,train/loss_l1,val/psnr_y", *lines]) + b"\n")


def test_damaged_rows_are_left_out_one_line_each(tmp_path, caplog):
    path = tmp_path / "metrics.csv"
    damaged = [b"0,2,0.\xff,", b"0,\x002,0.3,", b"0,2,0.3", b"0,2,abc,", b'0,"2,0.3,']
    _write(path, GOOD[:2] + damaged + GOOD[2:])
    with caplog.at_level(logging.WARNING):
        table = read_metrics_rows(path)
    assert table.damaged == [4, 5, 6, 7, 8]
    assert [r["step"] for r in table.rows] == ["0", "1", "1", "3", "3"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5 and all(str(path) in m and "left out" in m for m in lines)
    assert "row 4" in lines[0] and "not UTF-8" in lines[0] and "NUL" in lines[1]
    assert "3 cells" in lines[2] and "train/loss_l1 is 'abc'" in lines[3]
    # every reader sees the readable rows: the report's curves, the pruner's, the sweep summary
    assert read_metrics_csv(path)["val/psnr_y"] == [(1.0, 21.5), (3.0, 22.5)]
    assert read_curve(tmp_path, "val/psnr_y") == {2: 21.5, 4: 22.5}
    assert _best_metrics(tmp_path) == {"val/psnr_y": 22.5}
    assert _iterations(tmp_path, None) == 4


def test_a_damaged_header_leaves_nothing_and_says_so(tmp_path, caplog):
    path = tmp_path / "metrics.csv"
    path.write_bytes(b"epoch,st\xffep,val/psnr_y\n0,1,20.0\n")
    with caplog.at_level(logging.WARNING):
        table = read_metrics_rows(path)
    assert table.rows == [] and table.damaged == [1]
    assert "header row is damaged" in caplog.text
