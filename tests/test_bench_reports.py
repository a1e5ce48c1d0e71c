"""The results study's reports: bench/error_analysis.py (per-class F1, confusions, wrong answers with
their prompts), bench/scaling_plot.py (seeds averaged per fraction) and bench/small_sweep.py's table;
and the published results (README's table, BENCHMARKS' gaps) checked against bench/results/full_table/."""

from __future__ import annotations

import functools
import gzip
import itertools
import json
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from instructerc.cli import main
from instructerc.fileio import read_jsonl
from instructerc.records import save_records
from train_fixtures import LABELS, record

REPO = Path(__file__).resolve().parents[1]


def bench(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "bench" / script), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


def test_error_analysis_lists_wrong_answers_with_prompts(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    save_records(data / "train.jsonl", [replace(record("erc", i, t, LABELS), utterance=f"words {i}")
                                        for i, t in enumerate(["sad", "sad", "joyful"])])
    golds = ["sad", "angry", "fear", "sad", "angry"]
    test = [replace(record("erc", i, g, LABELS, "test"), id=f"meld/t{i}/0/erc", utterance=f"line {i}")
            for i, g in enumerate(golds)]
    save_records(data / "test.jsonl", test)
    save_records(data / "dev.jsonl", [replace(r, split="dev") for r in test])
    for kind in ("majority", "tfidf"):
        assert main(["baseline", "--data", str(data), "--kind", kind, "--out", str(tmp_path / kind)]) == 0

    out = tmp_path / "errors.md"
    done = bench("error_analysis.py", "--data", data, "--eval", tmp_path / "majority",
                 "--compare", f"tfidf={tmp_path / 'tfidf'}", "--n", "2", "--out", out)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "| sad | 2 | 57.1 |" in text and "F1 tfidf" in text  # majority answers sad: precision 2/5, recall 1
    assert "- gold **angry** answered **sad**: 2 (66.7% of all errors)" in text
    interval = next(line for line in text.splitlines() if line.startswith("| weighted-F1 95% interval"))
    ranges = [tuple(map(float, r)) for r in re.findall(r"\| (\d+\.\d\d)-(\d+\.\d\d) ", interval)]
    scores = [100 * json.loads((tmp_path / k / "metrics.json").read_text())["weighted_f1"] for k in ("majority", "tfidf")]
    assert len(ranges) == 2 and all(lo <= f <= hi for (lo, hi), f in zip(ranges, scores))  # one per row
    shown = [line for line in text.splitlines() if line[:3] in ("1. ", "2. ", "3. ")]
    assert len(shown) == 2 and all("answered **sad**" in line for line in shown)
    assert text.count("Please select the emotional label") == 2  # each shown with its prompt
    assert "confusion matrix: `majority/confusion.png`" in text  # relative: still right once stored
    assert re.search(r"- this row minus \*\*tfidf\*\*: [+-]\d+\.\d\d weighted-F1 points, 95% interval "
                     r"[+-]\d+\.\d\d to [+-]\d+\.\d\d; this row ahead in \d+\.\d% of 2000 resamples of the 5 utterances", text)

    # a row that spells the labels `Sad` (the paper's released EmoryNLP template) is the same classes
    shouted = tmp_path / "shouted"
    shouted.mkdir()
    m = json.loads((tmp_path / "tfidf" / "metrics.json").read_text())
    m["labels"] = [x.capitalize() for x in m["labels"]]
    m["per_class"] = {k.capitalize(): v for k, v in m["per_class"].items()}
    m["counts"] = {side: {k.capitalize(): v for k, v in c.items()} if isinstance(c, dict) else c
                   for side, c in m["counts"].items()}
    (shouted / "metrics.json").write_text(json.dumps(m))
    rows = [{**r, "gold": r["gold"].capitalize(), "pred": r["pred"].capitalize()}
            for r in read_jsonl(tmp_path / "tfidf" / "predictions.jsonl")]
    (shouted / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    paired = [line for line in text.splitlines() if line.startswith("- this row minus")]
    done = bench("error_analysis.py", "--data", data, "--eval", tmp_path / "majority",
                 "--compare", f"tfidf={shouted}", "--n", "2", "--out", out)
    assert done.returncode == 0, done.stderr
    assert [line for line in out.read_text().splitlines() if line.startswith("- this row minus")] == paired
    assert "nan" not in out.read_text()
    rows[1]["gold"] = "Sad"  # gold 'angry' in this row: another test split's labels
    (shouted / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = bench("error_analysis.py", "--data", data, "--eval", tmp_path / "majority",
                 "--compare", f"tfidf={shouted}", "--out", tmp_path / "y.md")
    assert done.returncode == 2 and "is 'Sad', this row's 'angry': not the same test labels" in done.stderr
    assert not (tmp_path / "y.md").exists()

    # a stored row: answers.jsonl.gz instead of predictions.jsonl; a reference row without answers is named
    stored = tmp_path / "stored"
    stored.mkdir()
    (stored / "metrics.json").write_bytes((tmp_path / "majority" / "metrics.json").read_bytes())
    (stored / "answers.jsonl.gz").write_bytes(gzip.compress((tmp_path / "majority" / "predictions.jsonl").read_bytes()))
    (tmp_path / "tfidf" / "predictions.jsonl").unlink()
    done = bench("error_analysis.py", "--data", data, "--eval", stored, "--compare", f"tfidf={tmp_path / 'tfidf'}",
                 "--out", out)
    assert done.returncode == 0, done.stderr
    assert "- tfidf: its answers are not at hand" in out.read_text() and "answered **sad**" in out.read_text()

    other = tmp_path / "other"
    other.mkdir()
    save_records(other / "test.jsonl", test[:1])
    done = bench("error_analysis.py", "--data", other, "--eval", tmp_path / "majority", "--out", tmp_path / "x.md")
    assert done.returncode != 0 and "not the data of this eval" in done.stderr and not (tmp_path / "x.md").exists()


def test_scaling_plot_averages_seeds(tmp_path):
    rows = {"full": {"fraction": 0.0625, "weighted_f1": 0.40}, "full@seed43": {"fraction": 0.0625, "weighted_f1": 0.42},
            "knn": {"fraction": 0.0625, "weighted_f1": 0.5}}
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.json").write_text(json.dumps({"full": {"fraction": 1.0, "weighted_f1": 0.6}}))
    done = bench("scaling_plot.py", tmp_path / "a.json", tmp_path / "b.json", "--rows", "full", "knn",
                 "--out", tmp_path / "s.png")
    assert done.returncode == 0, done.stderr
    assert "full       0.0625: 41.00 (n=2)  1: 60.00 (n=1)" in done.stdout
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_study_runs_rows_once_and_names_seeds(tmp_path, tiny_model_dir):
    from erc_fixtures import write_root

    root = write_root(tmp_path / "raw")
    args = ["--dataset", "meld", "--raw-dir", root, "--fraction", "1", "--model", tiny_model_dir,
            "--work", tmp_path / "study", "--train-seed", "7", "--rows", "majority", "tfidf", "utterance",
            "--set", "epochs.plain=1", "--set", "batch_size=2", "--set", "eval.max_records=2"]
    cut = bench("fraction_study.py", *args, "--set", "stop_after=1")  # as a kill would, then a rerun resumes
    assert cut.returncode == 1 and "stage plain stopped before its end; rerun" in cut.stderr, cut.stderr
    done = bench("fraction_study.py", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "study" / "results.json").read_text())
    summary = json.loads((tmp_path / "study" / "utterance@seed7" / "plain" / "summary.json").read_text())
    assert summary["segment_seconds"] < summary["seconds"] < results["utterance@seed7"]["seconds"]  # both segments
    assert list(results) == ["majority", "tfidf", "utterance@seed7"]  # baselines are not trained: no seed
    assert results["utterance@seed7"]["train_seed"] == 7
    run = tmp_path / "study" / "utterance@seed7"
    assert json.loads((run / "eval" / "metrics.json").read_text())["weighted_f1"] == results["utterance@seed7"]["weighted_f1"]
    assert "seed: 7" in (run / "plain" / "config.yaml").read_text()
    assert "--template utterance" in (tmp_path / "study" / "study.log").read_text()
    again = bench("fraction_study.py", *args)
    assert again.returncode == 0 and "$ " not in again.stdout  # every row done: nothing runs


def bench_module(name: str):
    """bench/NAME.py as a module, for tests that call or replace its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_studies_side_by_side_on_one_work_folder_keep_each_others_rows(tmp_path, monkeypatch):
    """Two studies of different rows on the same WORK: a row the other one finished while this one
    ran stays in results.json (each study used to write back only what it had read at its start)."""
    study = bench_module("fraction_study")
    work = tmp_path / "study"

    def prepare(args, kind, log):  # meanwhile the other study finishes its row
        (work / "results.json").write_text(json.dumps({"plain": {"what": "the other study", "weighted_f1": 0.5, "accuracy": 0.5, "seconds": 9}}))
        return tmp_path / "data"

    def run(cmd, log):
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps({"weighted_f1": 0.3, "accuracy": 0.4, "macro_f1": 0.1}))
        return 1.0

    monkeypatch.setattr(study, "prepare", prepare)
    monkeypatch.setattr(study, "run", run)
    monkeypatch.setattr(sys, "argv", ["fraction_study.py", "--work", str(work), "--rows", "majority"])
    study.main()
    results = json.loads((work / "results.json").read_text())
    assert list(results) == ["plain", "majority"] and results["majority"]["weighted_f1"] == 0.3


def test_a_warm_up_trained_by_another_row_on_the_same_records_is_copied_not_retrained(tmp_path, monkeypatch):
    """`no-demos` and `no-predict` run the same speaker stage: demonstrations change only the ERC prompts."""
    import yaml

    from instructerc.train_config import resolve_config
    from train_fixtures import write_data

    study = bench_module("fraction_study")
    plain = write_data(tmp_path / "data_plain")
    demo = tmp_path / "data_demo"
    shutil.copytree(plain, demo)
    rows = [json.loads(line) for line in (demo / "train.jsonl").read_text().splitlines()]
    (demo / "train.jsonl").write_text("".join(json.dumps({**r, "prompt": "demonstrations ... " + r["prompt"]} if r["task"] == "erc" else r) + "\n" for r in rows))
    trained = []

    def run(cmd, log):  # a finished stage as the trainer leaves it: config.yaml, summary, best/
        cmd = [str(c) for c in cmd]
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True)
        if "train" in cmd:
            trained.append(str(out.relative_to(tmp_path / "study")))
            sets = [cmd[i + 1] for i, c in enumerate(cmd) if c == "--set"]
            cfg = {**resolve_config(cmd[cmd.index("--config") + 1], sets), "stage": cmd[cmd.index("--stage") + 1],
                   "data": cmd[cmd.index("--data") + 1], "model": "m", "init_adapter": None, "world_size": 1}
            (out / "config.yaml").write_text(yaml.safe_dump(cfg))
            (out / "best").mkdir()
            (out / "summary.json").write_text(json.dumps({"seconds": 2.0}))
        (out / "metrics.json").write_text(json.dumps({"weighted_f1": 0.3, "accuracy": 0.4, "macro_f1": 0.1}))
        return 1.0

    monkeypatch.setattr(study, "prepare", lambda args, kind, log: {"plain": plain, "demo": demo}[kind])
    monkeypatch.setattr(study, "run", run)
    argv = ["fraction_study.py", "--work", str(tmp_path / "study"), "--model", "m", "--config", str(REPO / "configs/small/meld.yaml")]
    monkeypatch.setattr(sys, "argv", argv + ["--rows", "no-demos", "no-predict", "no-speaker"])
    study.main()
    assert trained == ["no-demos/speaker", "no-demos/joint", "no-predict/joint", "no-speaker/joint"]
    copied = tmp_path / "study" / "no-predict" / "speaker"
    assert (copied / "best").is_dir() and str(plain) in (copied / "config.yaml").read_text()
    assert "no-predict] stage speaker: the same settings and records as" in (tmp_path / "study" / "study.log").read_text()
    monkeypatch.setattr(sys, "argv", argv + ["--rows", "full", "--train-seed", "43"])  # another seed: trained
    study.main()
    assert trained[-2:] == ["full@seed43/speaker", "full@seed43/joint"]
    (tmp_path / "study" / "no-demos" / "speaker" / "config.yaml").write_text("{")  # damaged: no twin, trained
    (tmp_path / "study" / "no-predict" / "speaker" / "config.yaml").unlink()
    monkeypatch.setattr(sys, "argv", argv + ["--rows", "full"])
    study.main()
    assert trained[-2:] == ["full/speaker", "full/joint"]


def test_study_trains_in_ranks_under_the_deepspeed_launcher_and_scores_in_one_process(tmp_path, monkeypatch):
    study = bench_module("fraction_study")
    commands = []

    def run(cmd, log):  # each stage ends as a finished run would: its summary, then the test metrics
        commands.append([str(c) for c in cmd])
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "summary.json").write_text(json.dumps({"seconds": 2.0}))
        (out / "metrics.json").write_text(json.dumps({"weighted_f1": 0.3, "accuracy": 0.4, "macro_f1": 0.1}))
        return 1.0

    monkeypatch.setattr(study, "prepare", lambda args, kind, log: tmp_path / "data")
    monkeypatch.setattr(study, "run", run)
    monkeypatch.setattr(sys, "argv", ["fraction_study.py", "--work", str(tmp_path / "study"), "--rows", "no-predict",
                                      "--ranks", "2"])
    study.main()
    speaker, joint, score = commands
    for cmd in (speaker, joint):
        assert Path(cmd[0]).name == "deepspeed" and cmd[cmd.index("--num_gpus") + 1] == "2"
        assert cmd[cmd.index("--module") + 1:][:2] == ["instructerc", "train"]
    assert joint[joint.index("--init-adapter") + 1].endswith("speaker/best") and "beta=0" in joint
    assert score[:4] == [sys.executable, "-m", "instructerc", "eval"]


def test_study_names_an_unknown_dataset_before_writing_anything(tmp_path):
    done = bench("fraction_study.py", "--dataset", "meldx", "--work", tmp_path / "study")
    assert done.returncode == 2 and "invalid choice: 'meldx'" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "study").exists()


def test_study_refuses_zero_ranks_before_writing_anything(tmp_path):
    done = bench("fraction_study.py", "--ranks", "0", "--work", tmp_path / "study")
    assert done.returncode == 2 and "argument --ranks: must be at least 1, got 0" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "study").exists()


def test_sweep_report_keeps_unfinished_points_and_trains_nothing(tmp_path):
    """A point stopped on purpose (diverged) stays in the table with its curve so far, marked unfinished."""
    def point(name, scores, summary):
        run = tmp_path / "sweep" / name
        run.mkdir(parents=True)
        (run / "config.yaml").write_text("lr: 1\n")
        rows = [{"step": 1, "loss": 2.0}] + [{"epoch": e + 1, "dev_weighted_f1": f, "dev_macro_f1": f / 2}
                                               for e, f in enumerate(scores)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if summary:
            (run / "summary.json").write_text(json.dumps({"best": {"epoch": 2, "dev_weighted_f1": 0.4}, "seconds": 9.0}))

    point("lr=1e-3", [0.3, 0.4], summary=True)
    point("lr=1e-2", [0.28, 0.19], summary=False)
    out = tmp_path / "table.json"
    done = bench("small_sweep.py", "--data", tmp_path / "no-data", "--model", "none", "--root", tmp_path / "sweep",
                 "--grid", "lr=1e-3,1e-2,3e-2", "--report", "--out", out)
    assert done.returncode == 0, done.stderr
    results = {r["point"]["lr"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"1e-3", "1e-2"}  # 3e-2 was never started
    assert results["1e-3"]["finished"] and results["1e-3"]["seconds"] == 9.0
    assert not results["1e-2"]["finished"] and results["1e-2"]["best"]["epoch"] == 1
    assert [c["dev_weighted_f1"] for c in results["1e-2"]["dev"]] == [0.28, 0.19]
    assert "(unfinished)" in done.stdout and not (tmp_path / "sweep" / "lr=3e-2").exists()
    done = bench("small_sweep.py", "--data", "x", "--model", "none", "--root", tmp_path / "typo", "--grid", "lr=1e-3",
                 "--report", "--out", tmp_path / "none.json")
    assert done.returncode != 0 and "no point of this grid" in done.stderr and not (tmp_path / "none.json").exists()


def test_store_table_keeps_small_outputs_and_the_table_merges_seeds(tmp_path):
    work, out = tmp_path / "work", tmp_path / "stored"

    def row(study, name, f1, stages=()):
        metrics = {"weighted_f1": f1, "accuracy": f1 + 0.1, "macro_f1": f1 - 0.1}
        (work / study / name / "eval").mkdir(parents=True)
        (work / study / name / "eval" / "metrics.json").write_text(json.dumps(metrics))
        (work / study / name / "eval" / "predictions.jsonl").write_text(
            json.dumps({"id": "m/0/0/erc", "gold": "sad", "pred": "joyful", "probs": {"sad": 0.4}}) + "\n")
        for stage in stages:
            (work / study / name / stage / "checkpoints").mkdir(parents=True)
            for f in ("summary.json", "metrics.jsonl", "config.yaml", "train.log"):
                (work / study / name / stage / f).write_text("{}")
        results = work / study / "results.json"
        done = json.loads(results.read_text()) if results.exists() else {}
        results.write_text(json.dumps({**done, name: {"weighted_f1": f1}}))

    row("meld_1", "tfidf", 0.45)
    row("meld_1", "full", 0.50, stages=("speaker", "joint"))
    row("meld_1", "full@seed43", 0.54, stages=("speaker", "joint"))
    row("meld_0.0625", "full", 0.30, stages=("joint",))
    (work / "meld_1" / "half_done" / "plain" / "checkpoints").mkdir(parents=True)  # not in results.json yet
    (work / "meld_1" / "cut_off" / "joint" / "checkpoints").mkdir(parents=True)  # stopped after scoring dev
    for f in ("metrics.jsonl", "config.yaml", "train.log"):
        (work / "meld_1" / "cut_off" / "joint" / f).write_text("{}")
    (work / "errors_meld.md").write_text("# errors\n")

    done = bench("store_table.py", work, "--out", out)
    assert done.returncode == 0, done.stderr
    stored = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert "meld_1/full@seed43/joint/metrics.jsonl" in stored and "meld_1/full/speaker/config.yaml" in stored
    assert "errors_meld.md" in stored and "meld_0.0625/results.json" in stored
    assert "meld_1/cut_off/joint/metrics.jsonl" in stored and "meld_1/cut_off/joint/config.yaml" in stored
    assert "meld_1/cut_off/joint/train.log" in stored
    assert not [p for p in stored if "predictions" in p or "checkpoints" in p or "half_done" in p]
    answers = out / "meld_1" / "tfidf" / "eval" / "answers.jsonl.gz"  # id, gold and answer only, for paired tests
    assert read_jsonl(answers) == [{"id": "m/0/0/erc", "gold": "sad", "pred": "joyful"}]
    before = answers.read_bytes()
    assert bench("store_table.py", work, "--out", out).returncode == 0 and answers.read_bytes() == before

    table = bench("results_table.py", *sorted(out.glob("*/*/eval/metrics.json")))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "| row | meld_0.0625 | meld |"
    assert "| full | 30.00 (40.00, 20.00) | 52.00 (50.00 / 54.00; 2 seeds) |" in lines
    assert lines[2:] == ["| full | 30.00 (40.00, 20.00) | 52.00 (50.00 / 54.00; 2 seeds) |",
                         "| tfidf |  | 45.00 (55.00, 35.00) |"]  # the order of the first study's results.json
    metrics = sorted(out.glob("*/*/eval/metrics.json"))
    diff = bench("results_table.py", *metrics, "--minus", "full", "--reference", "paper=meld:60")
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout.splitlines() == ["| full minus | meld_0.0625 | meld |", "|---|---:|---:|",
                                        "| tfidf |  | +7.00 (pairs +5.00 / +9.00) |",
                                        "| paper |  | -8.00 (pairs -10.00 / -6.00) |",
                                        "| seed spread: full | one seed | 4.00 |"]
    unknown = bench("results_table.py", *metrics, "--minus", "window")
    assert unknown.returncode == 2 and "--minus window: no such row among the files given (rows: full, tfidf)" in unknown.stderr
    missing = bench("results_table.py", "/nonexistent/metrics.json")
    assert missing.returncode == 2 and "file not found" in missing.stderr and "Traceback" not in missing.stderr
    shallow = bench("results_table.py", "metrics.json")  # too shallow for STUDY/ROW/eval/, once it reads
    assert shallow.returncode == 2 and "Traceback" not in shallow.stderr
    malformed = bench("results_table.py", *metrics, "--minus", "full", "--reference", "paper=meld")
    assert malformed.returncode == 2 and "expected NAME=DATASET:F1" in malformed.stderr and "Traceback" not in malformed.stderr
    alone = bench("results_table.py", *metrics, "--reference", "paper=meld:60")  # used to print the table, ignoring it
    assert alone.returncode == 2 and "--reference needs --minus" in alone.stderr and not alone.stdout

    empty = bench("store_table.py", tmp_path / "nothing", "--out", tmp_path / "x")
    assert empty.returncode == 1 and "no study with a results.json" in empty.stderr and not (tmp_path / "x").exists()
    (work / "meld_1" / "tfidf" / "eval" / "predictions.jsonl").write_text('{"id": "a", "gold": "sad", "pred": "sad"}\n{"id": "b"}\n')
    unanswered = bench("store_table.py", work, "--out", tmp_path / "w")
    assert unanswered.returncode == 1 and "predictions.jsonl, row 2: a prediction needs id, gold and pred" in unanswered.stderr
    assert not (tmp_path / "w").exists()
    (work / "meld_1" / "results.json").write_text("{")
    broken = bench("store_table.py", work, "--out", tmp_path / "y")
    assert broken.returncode == 1 and "results.json: not valid JSON" in broken.stderr and not (tmp_path / "y").exists()
    (work / "meld_1" / "results.json").write_text("[1, 2]")
    listed = bench("store_table.py", work, "--out", tmp_path / "z")
    assert listed.returncode == 1 and "expected an object of rows" in listed.stderr and "Traceback" not in listed.stderr
    assert not (tmp_path / "z").exists()
    (work / "meld_1" / "results.json").write_text("{")
    bad = bench("results_table.py", work / "meld_1" / "results.json")
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr and "Traceback" not in bad.stderr


@functools.cache
def benchmarks_tables() -> dict[str, tuple[str, str]]:
    """Each results_table.py command that ends a bash block in BENCHMARKS.md, with what it prints now
    and the table written under the block (run once per test session: the stored outputs do not change)."""
    text = (REPO / "BENCHMARKS.md").read_text()
    blocks = re.findall(r"^(python bench/results_table\.py (?:[^\n]*\\\n)*[^\n]*)\n```\n\n((?:\|.*\n)+)", text, re.M)
    tables = {}
    for command, written in blocks:
        command = command.replace("\\\n", " ")
        done = subprocess.run(["bash", "-c", command.replace("python ", f"{sys.executable} ", 1)],
                              capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 0, f"{command}: {done.stderr}"
        tables[command] = done.stdout, written
    return tables


def benchmarks_gaps() -> tuple[str, str]:
    """What BENCHMARKS.md's results_table.py --minus command prints now, and the table written under it."""
    gaps = [table for command, table in benchmarks_tables().items() if "--minus" in command]
    assert len(gaps) == 1, "BENCHMARKS.md needs one results_table.py --minus block followed by its table"
    return gaps[0]


def markdown_table(lines: list[str]) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("|")]


def readme_table(start: str) -> list[list[str]]:
    """The README table whose first line starts with `start`, as rows of cells."""
    text = (REPO / "README.md").read_text()
    return markdown_table(list(itertools.takewhile(lambda line: line.startswith("|"),
                                                   text[text.index(start):].splitlines())))


def test_the_gaps_table_in_benchmarks_is_what_its_command_prints_from_the_stored_outputs():
    """The README's answer to issue 13 rests on this table: a new stored row must not leave it stale."""
    printed, written = benchmarks_gaps()
    assert printed == written


def test_the_score_tables_in_benchmarks_are_what_their_commands_print_from_the_stored_outputs():
    """The hand-labelled tables ("tfidf", "full (the full recipe; stops ...)") keep the printed cells of
    every stored row; rows a command does not print are the published references."""
    scores = [table for command, table in benchmarks_tables().items() if "--minus" not in command]
    assert len(scores) >= 2
    for printed, written in scores:
        printed, written = markdown_table(printed.splitlines()), markdown_table(written.splitlines())
        assert written[0] == printed[0]
        rows = {row[0]: row[1:] for row in printed[2:]}
        shown = {label.split()[0]: cells for label, *cells in written[2:] if label.split()[0] in rows}
        assert shown == rows


# README's gaps table: the start of each row's label -> the rows of results_table's --minus output it shows
README_GAPS = {"TF-IDF": ["tfidf"], "kNN": ["knn"], "window prompt": ["plain"], "roberta-base": ["roberta-base"],
               "InstructERC": ["paper-llama2-7b"], "seed spread": ["seed spread: full", "seed spread: plain"]}


def test_the_readme_gaps_table_is_the_commands_output():
    """Each cell's leading number(s) are the --minus output's (its mean gap, or the spreads 'full / window')."""
    printed, _ = benchmarks_gaps()
    out = markdown_table(printed.splitlines())
    gaps = {row[0]: dict(zip(out[0][1:], row[1:])) for row in out[2:]}
    table = readme_table("| full recipe minus |")
    datasets = [h.split()[0].lower() for h in table[0][1:]]
    assert len(table) > 2
    for label, *cells in table[2:]:
        rows = next((v for k, v in README_GAPS.items() if label.startswith(k)), None)
        assert rows, f"README gaps row {label!r}: add it to README_GAPS"
        for dataset, cell in zip(datasets, cells):
            expected = [re.match(r"[-+]?\d+\.\d+|one seed", gaps[r][dataset]).group() for r in rows]
            assert re.findall(r"[-+]?\d+\.\d+|one seed", cell)[:len(rows)] == expected, f"{label} / {dataset}"


# README's score tables: the line that starts each, the start of each row's label -> its stored row
# (None: a published reference), and what each column shows: a stored study's scores, (study, row): the
# gap of the row's mean to that row's mean in that study, or None (a column of other numbers)
ABLATION_ROWS = {"full recipe": "full", "without demonstrations": "no-demos", "without the speaker stage": "no-speaker",
                 "without emotion prediction": "no-predict", "window prompt": "plain"}
README_TABLES = {
    "| row |": ({"majority class": "majority", "TF-IDF": "tfidf", "kNN vote": "knn", "zero-shot": "zero-shot",
                 "LoRA on the utterance alone": "utterance", "LoRA on the window prompt": "plain",
                 "full recipe": "full", "roberta-base": None, "InstructERC": None},
                ["meld", "iemocap", "emorynlp"]),
    "| MELD 1/16 |": (ABLATION_ROWS, ["meld_0.0625", None]),
    "| all of MELD |": (ABLATION_ROWS, ["meld", ("meld", "full")]),
}


def stored_f1() -> dict[str, dict[str, list[float]]]:
    """Test weighted-F1 of every stored row per study (a dataset's name alone for all of its data),
    grouped by results_table (seed 42 first)."""
    paths = sorted(map(str, (REPO / "bench/results/full_table").glob("*/*/eval/metrics.json")))
    runs, _ = bench_module("results_table").load(paths)
    return {row: {d: [100 * m["weighted_f1"] for m in ms] for d, ms in by.items()} for row, by in runs.items()}


@pytest.mark.parametrize("start", README_TABLES)
def test_the_readme_score_tables_are_the_stored_outputs(start):
    """Each cell is the row's mean then each seed's value (or its one value), as stored: a newly stored
    seed or row must reach the README."""
    labels, studies = README_TABLES[start]
    table = readme_table(start)
    assert len(table[0]) == 1 + len(studies)
    stored = stored_f1()
    checked = set()
    for label, *cells in table[2:]:
        keys = [k for k in labels if label.startswith(k)]
        assert keys, f"README table {start} row {label!r}: add it to README_TABLES"
        row = labels[keys[0]]
        if row is None:
            continue
        for study, cell in zip(studies, cells):
            if isinstance(study, tuple):
                study, base = study
                gap = statistics.mean(stored[row][study]) - statistics.mean(stored[base][study])
                numbers = re.findall(r"[-+]\d+\.\d+", cell)
                assert numbers[:1] == ([] if row == base else [f"{gap:+.2f}"]), f"{label} / minus {base}"
            elif study:
                f1 = stored[row].get(study, [])
                expected = [statistics.mean(f1)] + f1 if len(f1) > 1 else f1
                assert re.findall(r"\d+\.\d+", cell) == [f"{v:.2f}" for v in expected], f"{label} / {study}"
        checked.add(row)
    assert checked == {r for r in labels.values() if r}


def test_every_bold_score_in_the_readme_results_is_a_stored_run_or_seed_mean():
    """The prose under the tables quotes headline scores in bold; each must be what results_table gives
    for some stored study (a mean rounded from the rounded seeds once read 55.63 where 55.62 is stored)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("**The results so far**"):text.index("<!-- /section: results -->")]
    stored = {f"{v:.2f}" for by in stored_f1().values() for f1 in by.values() for v in f1 + [statistics.mean(f1)]}
    bold = re.findall(r"\*\*(\d+\.\d+)\*\*", section)
    assert len(bold) > 10
    assert [b for b in bold if b not in stored] == []
