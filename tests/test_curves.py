"""RUN/curves.png and `instructerc plot`: what is drawn, and one-line errors."""

from __future__ import annotations

import json

from instructerc.cli import main
from instructerc.curves import distinct_names, read_run

PNG = b"\x89PNG\r\n\x1a\n"


def fake_run(folder, dev=(0.2, 0.35, 0.3), score="dev_weighted_f1"):
    folder.mkdir(parents=True)
    rows = []
    for step in range(1, 10):
        rows.append({"step": step, "epoch": 1 + (step - 1) // 3, "loss": 2.0 / step, "loss_erc": 2.0 / step,
                     "loss_predict": None if step % 2 else 1.5 / step, "lr": 1e-3 * step / 9, "tokens": 10})
        if step % 3 == 0:
            rows.append({"step": step, "epoch": step // 3, score: dev[step // 3 - 1], "dev_n": 5})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_read_run_collects_losses_lr_and_the_selected_epoch(tmp_path):
    curves = read_run(fake_run(tmp_path / "a"))
    assert [s for s, _ in curves.losses["erc"]] == list(range(1, 10))
    assert [s for s, _ in curves.losses["predict"]] == [2, 4, 6, 8]  # a null loss is no point, not a zero
    assert len(curves.lr) == 9 and [d[1] for d in curves.dev] == [1, 2, 3] and curves.best_epoch == 2


def test_the_speaker_warm_up_is_drawn_by_its_own_dev_score(tmp_path):
    curves = read_run(fake_run(tmp_path / "w", dev=(0.5, 0.4, 0.7), score="dev_speaker_accuracy"))
    assert curves.dev_score == "dev_speaker_accuracy" and [d[2] for d in curves.dev] == [0.5, 0.4, 0.7]
    assert curves.best_epoch == 3 and len(curves.lr) == 9  # a dev row is not taken for a step row
    ercs = fake_run(tmp_path / "e")
    assert main(["plot", str(tmp_path / "w"), str(ercs), "--out", str(tmp_path / "mixed.png")]) == 0


def test_plot_one_run_and_two_runs_on_the_same_axes(tmp_path, capsys):
    a, b = fake_run(tmp_path / "a"), fake_run(tmp_path / "b", dev=(0.4, 0.3, 0.2))
    assert main(["plot", str(a)]) == 0 and (a / "curves.png").read_bytes()[:8] == PNG
    out = tmp_path / "both.png"
    assert main(["plot", str(a), str(b), "--out", str(out)]) == 0 and out.read_bytes()[:8] == PNG
    assert "curves of 2 run(s)" in capsys.readouterr().out


def test_runs_are_named_by_the_path_parts_that_tell_them_apart(tmp_path):
    full, ablation = str(tmp_path / "meld" / "full" / "joint"), str(tmp_path / "meld" / "no-speaker" / "joint")
    assert distinct_names([full, ablation]) == ["full/joint", "no-speaker/joint"]
    assert distinct_names([full, str(tmp_path / "other")]) == ["joint", "other"]
    assert distinct_names([full]) == ["joint"] and distinct_names([full, full]) == ["joint", "joint"]
    assert distinct_names([full, full, ablation]) == ["full/joint", "full/joint", "no-speaker/joint"]


def test_plot_of_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    out = tmp_path / "x.png"
    assert main(["plot", str(tmp_path / "data"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a training run folder" in err[0] and not out.exists()
    bad = fake_run(tmp_path / "bad")
    with open(bad / "metrics.jsonl", "a") as f:
        f.write("{broken\n")
    assert main(["plot", str(bad), "--out", str(out)]) == 2
    assert "row 13" in capsys.readouterr().err and not out.exists()
