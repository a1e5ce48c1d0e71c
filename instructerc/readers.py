"""Readers: every source format -> list[Dialogue] per split.

Each format turns its file into `Row`s (one utterance plus where it sits in the file); one
assembler groups them into dialogues and checks them, so every format reports a bad row the
same way: file, row (the line a user finds in an editor), problem.

Formats: MELD CSV, EmoryNLP CSV and official JSON, the COSMIC pickles (meld, iemocap,
emorynlp), and a user's own CSV/JSONL with dialogue_id, speaker, utterance[, emotion][, turn].
"""

from __future__ import annotations

import ast
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from instructerc.dialogue import Dialogue, Utterance
from instructerc.errors import UserError
from instructerc.fileio import iter_jsonl, json_problem, read_text
from instructerc.labels import LabelSet, label_set
from instructerc.unpickle import repair_cp1252, safe_load

SPLITS = ("train", "dev", "test")
FORMATS = ("csv", "json", "cosmic")

# (dataset, format) -> (subfolder of a raw-data root, file name per split or one file for all)
SOURCES: dict[tuple[str, str], tuple[str, dict[str, str] | str]] = {
    ("meld", "csv"): ("meld", {s: f"{s}_sent_emo.csv" for s in SPLITS}),
    ("emorynlp", "csv"): ("emorynlp", {s: f"emorynlp_{s}_final.csv" for s in SPLITS}),
    ("emorynlp", "json"): ("emorynlp", {s: f"emotion-detection-{t}.json" for s, t in zip(SPLITS, ("trn", "dev", "tst"))}),
    ("meld", "cosmic"): ("cosmic", "meld.pkl"),
    ("iemocap", "cosmic"): ("cosmic", "iemocap.pkl"),
    ("emorynlp", "cosmic"): ("cosmic", "EmoryNLP.pkl"),
}
DEFAULT_FORMAT = {"meld": "csv", "emorynlp": "csv", "iemocap": "cosmic"}


@dataclass(frozen=True)
class Row:
    """One utterance as a file holds it."""

    where: int  # the file's line number (CSV, JSONL), or the utterance's 1-based position (JSON, pickle)
    dialogue_id: str
    order: int | None  # the file's own turn number, if it has one
    speaker: str
    text: str
    emotion: str | None
    speaker_index: int | None = None  # the file's own speaker number, where it has one


# ---------------------------------------------------------------- decoding, CSV, JSONL


def csv_rows(path: str | Path, required: Iterable[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number where the record starts, {column: value}) for each record of a CSV file."""
    path = Path(path)
    reader = csv.reader(io.StringIO(read_text(path), newline=""), strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise UserError("empty file, expected a header row", path=path, row=1) from None
    except csv.Error as e:  # a stray quote in the header, a file cut inside a quoted header, a 128 KiB header cell
        raise UserError(f"malformed CSV ({e})", path=path, row=1) from None
    missing = [c for c in required if c not in header]
    if missing:
        raise UserError(f"missing column {', '.join(map(repr, missing))} (header has: {', '.join(header)})", path=path, row=1)
    line = reader.line_num + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:  # unterminated quote at the end of a truncated file, stray quote, ...
            if "field larger than field limit" in str(e):  # csv's own cap; raising it is process-wide
                raise UserError(f"a field longer than {csv.field_size_limit():,} characters", path=path, row=line) from None
            raise UserError(f"malformed CSV ({e}); is the file truncated?", path=path, row=line) from None
        if fields:  # csv yields [] for a blank line
            if len(fields) != len(header):
                raise UserError(f"{len(fields)} fields where the header has {len(header)}; is the file truncated?", path=path, row=line)
            yield line, dict(zip(header, fields))
        line = reader.line_num + 1


def jsonl_rows(path: str | Path, required: Iterable[str]) -> Iterator[tuple[int, dict]]:
    for line, row in iter_jsonl(path):
        missing = [c for c in required if c not in row]
        if missing:
            raise UserError(f"missing field {', '.join(map(repr, missing))}", path=path, row=line)
        yield line, row


def _int(value: str, column: str, path: Path, line: int) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise UserError(f"{column} {value!r} is not an integer", path=path, row=line) from None


# ---------------------------------------------------------------- rows -> dialogues


def assemble(
    path: str | Path,
    rows: Iterable[Row],
    dataset: str,
    split: str,
    labels: LabelSet | None,
    *,
    consecutive: bool = False,
) -> list[Dialogue]:
    """Group rows into dialogues (turns renumbered 0..n-1), checking each row.

    A dialogue's rows must be adjacent and, where the file numbers its turns, in increasing
    order. `consecutive` also forbids holes in that numbering (0, 1, 2, ...): the official MELD
    and EmoryNLP releases have holes where utterances were dropped, a user's file must not.
    """
    path = Path(path)
    dialogues: dict[str, list[Utterance]] = {}
    last_order: dict[str, int | None] = {}
    current = None
    for row in rows:
        where = dict(path=path, row=row.where)
        if row.dialogue_id != current and row.dialogue_id in dialogues:
            raise UserError(f"dialogue {row.dialogue_id!r} continues here after other dialogues (a gap in its turns); keep each dialogue's rows together", **where)
        current = row.dialogue_id
        turns = dialogues.setdefault(row.dialogue_id, [])
        if row.order is not None:
            prev = last_order.get(row.dialogue_id)
            expected = 0 if prev is None else prev + 1
            if prev is not None and row.order <= prev:
                raise UserError(f"dialogue {row.dialogue_id!r}: turn {row.order} comes after turn {prev} (repeated or out of order)", **where)
            if consecutive and row.order != expected:
                raise UserError(f"dialogue {row.dialogue_id!r} has a gap in its turns: turn {row.order} where {expected} was expected", **where)
            last_order[row.dialogue_id] = row.order
        text = row.text.strip()
        if not text:
            raise UserError(f"empty utterance in dialogue {row.dialogue_id!r}", **where)
        if not row.speaker.strip():
            raise UserError(f"empty speaker in dialogue {row.dialogue_id!r}", **where)
        turns.append(Utterance(len(turns), row.speaker.strip(), text, _emotion(row, labels, where), row.speaker_index))
    return [Dialogue(dataset, split, d, tuple(us)) for d, us in dialogues.items()]


def _emotion(row: Row, labels: LabelSet | None, where: dict) -> str | None:
    raw = (row.emotion or "").strip()
    if not raw:
        if labels is not None and row.emotion is not None:
            raise UserError("empty emotion", **where)
        return None
    if labels is None:
        return raw.lower()
    try:
        return labels.canonical(raw)
    except KeyError:
        raise UserError(f"unknown emotion {raw!r} (expected one of: {labels.text()})", **where) from None


# ---------------------------------------------------------------- the formats


def read_meld_csv(path: str | Path, split: str, dataset: str = "meld", labels: LabelSet | None = None) -> list[Dialogue]:
    """The official MELD CSV ({train,dev,test}_sent_emo.csv), or any file with its columns."""
    path = Path(path)
    cols = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
    rows = (
        Row(line, str(_int(r["Dialogue_ID"], "Dialogue_ID", path, line)), _int(r["Utterance_ID"], "Utterance_ID", path, line),
            r["Speaker"], r["Utterance"], r["Emotion"])
        for line, r in csv_rows(path, cols)
    )
    return assemble(path, rows, dataset, split, labels or label_set("meld"))


def emorynlp_dialogue_id(season: int, episode: int, scene: int) -> str:
    """The official JSON's scene id (s01_e02_c03), used for every EmoryNLP source."""
    return f"s{season:02d}_e{episode:02d}_c{scene:02d}"


def _speaker_list(value: str) -> str:
    """EmoryNLP speakers: a list literal such as "['Monica Geller', 'Phoebe Buffay']"."""
    try:
        names = ast.literal_eval(value)
    # not a literal; or one the parser cannot build: {[1]} (TypeError, unhashable), deep nesting
    # (RecursionError, or MemoryError from the parser's stack)
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
        return value
    if isinstance(names, (list, tuple)):
        return " and ".join(str(n).strip() for n in names)
    return str(names)


def read_emorynlp_csv(path: str | Path, split: str, labels: LabelSet | None = None) -> list[Dialogue]:
    """emorynlp_{train,dev,test}_final.csv: a dialogue is (Season, Episode, Scene_ID)."""
    path = Path(path)
    cols = ("Utterance", "Speaker", "Emotion", "Scene_ID", "Utterance_ID", "Season", "Episode")

    def rows():
        for line, r in csv_rows(path, cols):
            season, episode, scene = (_int(r[c], c, path, line) for c in ("Season", "Episode", "Scene_ID"))
            yield Row(line, emorynlp_dialogue_id(season, episode, scene), _int(r["Utterance_ID"], "Utterance_ID", path, line),
                      _speaker_list(r["Speaker"]), r["Utterance"], r["Emotion"])

    return assemble(path, rows(), "emorynlp", split, labels or label_set("emorynlp"))


def read_emorynlp_json(path: str | Path, split: str, labels: LabelSet | None = None) -> list[Dialogue]:
    """The official emotion-detection-{trn,dev,tst}.json: episodes -> scenes -> utterances.

    JSON has no rows, so `row N` in an error counts utterances from the file's start (1-based).
    """
    path = Path(path)
    try:
        data = json.loads(read_text(path))
        scenes = [(s["scene_id"], s["utterances"]) for ep in data["episodes"] for s in ep["scenes"]]
    except json.JSONDecodeError as e:
        raise UserError(f"not valid JSON ({e.msg}); is the file truncated?", path=path, row=e.lineno) from None
    except (ValueError, RecursionError) as e:
        raise UserError(f"not valid JSON ({json_problem(e)})", path=path) from None
    except (KeyError, TypeError) as e:
        raise UserError(f"not the official EmoryNLP JSON layout (episodes -> scenes -> utterances; missing {e})", path=path) from None

    def rows():
        n = 0
        for scene_id, utterances in scenes:
            # The official files hold a string id, a list of utterance objects, and in each a list
            # of names and two strings; other JSON types would fail deep inside (or reach the
            # prompts as Python's repr of them), so they are refused here.
            if not isinstance(scene_id, str) or not isinstance(utterances, list):
                raise UserError(f"scene {scene_id!r}: expected a string scene_id and a list of utterances", path=path, row=n + 1)
            for u in utterances:
                n += 1
                if not isinstance(u, dict):
                    raise UserError(f"scene {scene_id!r}: an utterance is {type(u).__name__}, not an object", path=path, row=n)
                missing = [k for k in ("speakers", "transcript", "emotion") if k not in u]
                if missing:
                    raise UserError(f"utterance {u.get('utterance_id', '?')} lacks {', '.join(missing)}", path=path, row=n)
                speakers, text, emotion = u["speakers"], u["transcript"], u["emotion"]
                if not (isinstance(speakers, list) and all(isinstance(s, str) for s in speakers)):
                    raise UserError(f"utterance {u.get('utterance_id', '?')}: speakers is not a list of names", path=path, row=n)
                if not (isinstance(text, str) and isinstance(emotion, str)):
                    raise UserError(f"utterance {u.get('utterance_id', '?')}: transcript and emotion must be strings", path=path, row=n)
                yield Row(n, scene_id, None, " and ".join(speakers), text, emotion)

    return assemble(path, rows(), "emorynlp", split, labels or label_set("emorynlp"))


CUSTOM_COLUMNS = ("dialogue_id", "speaker", "utterance")


def read_custom(path: str | Path, split: str, dataset: str = "custom", labels: LabelSet | None = None) -> list[Dialogue]:
    """A user's conversations: CSV or JSONL with dialogue_id, speaker, utterance[, emotion][, turn].

    Rows are in conversation order; an optional `turn` column must count 0, 1, 2, ... per
    dialogue. Without `labels`, emotions are kept as written (lower-cased). Extra columns are
    ignored.
    """
    path = Path(path)
    reader = jsonl_rows if path.suffix.lower() in (".jsonl", ".json") else csv_rows
    line_rows = reader(path, CUSTOM_COLUMNS)

    def rows():
        for line, r in line_rows:
            if split == "train" and "emotion" not in r:
                raise UserError("a training file needs an 'emotion' column", path=path, row=line)
            turn = r.get("turn")
            order = None if turn in (None, "") else _int(turn, "turn", path, line)
            yield Row(line, str(r["dialogue_id"]).strip(), order, str(r["speaker"] or ""), str(r["utterance"] or ""),
                      None if r.get("emotion") is None else str(r["emotion"]))

    return assemble(path, rows(), dataset, split, labels, consecutive=True)


# The COSMIC pickles: meld.pkl [speakers, emotions, sentiments, sentences, train, test, dev ids];
# iemocap.pkl and EmoryNLP.pkl [speakers, emotions, sentences, train, test, dev ids].
COSMIC_LAYOUT = {"meld": (0, 1, 3, 4, 6, 5), "iemocap": (0, 1, 2, 3, 5, 4), "emorynlp": (0, 1, 2, 3, 5, 4)}
# COSMIC numbered MELD's dev and test dialogues after the train ones; the CSVs restart at 0.
MELD_ID_OFFSET = {"train": 0, "dev": 1039, "test": 1153}


def _speaker_index(value) -> int:
    """A speaker's number in a pickle: the hot position of a one-hot, or for IEMOCAP's genders
    M -> 0 and F -> 1 (as the released InstructERC code numbers them)."""
    if isinstance(value, str):
        return 0 if value == "M" else 1
    return max(range(len(value)), key=lambda i: value[i])


def _cosmic_dialogue_id(dataset: str, split: str, key) -> str:
    if dataset == "meld":
        return str(int(key) - MELD_ID_OFFSET[split])
    if dataset == "emorynlp":
        season, episode, scene = (int(p) for p in str(key).split("_"))
        return emorynlp_dialogue_id(season, episode, scene)
    return str(key)


def read_cosmic(path: str | Path, dataset: str) -> dict[str, list[Dialogue]]:
    """All three splits of a COSMIC pickle. Speakers are numbers there, shown as `Speaker_<i>`:
    MELD and EmoryNLP number them by first appearance, IEMOCAP by gender (M 0, F 1)."""
    path = Path(path)
    data = safe_load(path)
    layout = COSMIC_LAYOUT[dataset]
    if not isinstance(data, (list, tuple)) or len(data) != max(layout) + 1:
        raise UserError(f"not a COSMIC {dataset} pickle (expected a list of {max(layout) + 1} parts)", path=path)
    speakers, emotions, sentences, *ids = (data[i] for i in layout)
    labels = label_set(dataset)
    out = {}
    for split, split_ids in zip(SPLITS, ids):
        dialogues = []
        for key in split_ids:
            did = _cosmic_dialogue_id(dataset, split, key)
            spk, emo, text = speakers[key], emotions[key], sentences[key]
            if not len(spk) == len(emo) == len(text):
                raise UserError(f"dialogue {key!r}: {len(text)} sentences but {len(spk)} speakers and {len(emo)} labels", path=path)
            rows = (
                Row(i, did, None, f"Speaker_{_speaker_index(s)}", repair_cp1252(t) if dataset == "meld" else t,
                    _label_word(labels, e, path, did, i), _speaker_index(s))
                for i, (s, e, t) in enumerate(zip(spk, emo, text), 1)
            )
            dialogues += assemble(path, rows, dataset, split, labels)
        out[split] = dialogues
    return out


def _label_word(labels: LabelSet, index, path: Path, did: str, turn: int) -> str:
    i = int(index)
    if not 0 <= i < len(labels.labels):
        raise UserError(f"dialogue {did!r}, utterance {turn}: label index {i} outside 0..{len(labels.labels) - 1}", path=path)
    return labels.labels[i]


# ---------------------------------------------------------------- a dataset's three splits


def locate(raw_dir: str | Path, subfolder: str, name: str) -> Path:
    """`raw_dir/name`, or `raw_dir/subfolder/name` when raw_dir is a root like ../shared/datasets."""
    direct = Path(raw_dir) / name
    nested = Path(raw_dir) / subfolder / name
    return nested if not direct.exists() and nested.exists() else direct


def read_file(path: str | Path, dataset: str, split: str, labels: LabelSet | None = None) -> list[Dialogue]:
    """One split from one file, the reader chosen by dataset and file extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if labels is None and dataset != "custom":
        labels = label_set(dataset)
    if dataset == "custom" or suffix == ".jsonl":
        return read_custom(path, split, dataset, labels)
    if suffix == ".json":
        return read_emorynlp_json(path, split, labels)
    if dataset == "emorynlp":
        return read_emorynlp_csv(path, split, labels)
    if dataset == "meld":
        return read_meld_csv(path, split, labels=labels)
    raise UserError(f"{dataset} has no CSV/JSON release; read it from its COSMIC pickle (--format cosmic)", path=path)


def read_dataset(
    dataset: str,
    fmt: str | None = None,
    raw_dir: str | Path | None = None,
    files: dict[str, str | Path] | None = None,
    labels: LabelSet | None = None,
) -> tuple[dict[str, list[Dialogue]], list[Path]]:
    """All splits of a dataset, and the files they came from.

    `files` (split -> path) overrides the default file names inside `raw_dir`.
    """
    files = {s: Path(p) for s, p in (files or {}).items() if p}
    fmt = fmt or DEFAULT_FORMAT.get(dataset, "csv")
    if dataset != "custom" and (dataset, fmt) not in SOURCES:
        raise UserError(f"--format {fmt} is not available for {dataset}; choose one of: "
                        + ", ".join(f for d, f in SOURCES if d == dataset))
    if fmt == "cosmic" and dataset != "custom":
        if files:
            raise UserError("--train/--dev/--test name CSV or JSON files; a COSMIC pickle holds all splits (give --raw-dir)")
        subfolder, name = SOURCES[(dataset, fmt)]
        path = locate(_need_raw_dir(raw_dir), subfolder, name)
        return read_cosmic(path, dataset), [path]
    paths = {}
    for split in SPLITS:
        if split in files:
            paths[split] = files[split]
        elif dataset == "custom":
            paths[split] = _custom_default(_need_raw_dir(raw_dir), split)
        else:
            subfolder, names = SOURCES[(dataset, fmt)]
            paths[split] = locate(_need_raw_dir(raw_dir), subfolder, names[split])
    if dataset == "custom" and labels is None:  # the labels are those the training file uses
        labels = custom_labels(read_file(paths["train"], dataset, "train"))
    splits = {split: read_file(path, dataset, split, labels) for split, path in paths.items()}
    return splits, list(paths.values())


def custom_labels(dialogues: list[Dialogue]) -> LabelSet:
    """A user's label set: the emotions their dialogues use, sorted."""
    return LabelSet("custom", tuple(sorted({u.emotion for d in dialogues for u in d.utterances if u.emotion})))


def _need_raw_dir(raw_dir) -> Path:
    if raw_dir is None:
        raise UserError("give --raw-dir DIR (the folder holding the dataset's files), or --train/--dev/--test files")
    if not Path(raw_dir).is_dir():
        raise UserError("raw-data folder not found", path=raw_dir)
    return Path(raw_dir)


def _custom_default(raw_dir: Path, split: str) -> Path:
    for suffix in (".csv", ".jsonl"):
        if (raw_dir / f"{split}{suffix}").exists():
            return raw_dir / f"{split}{suffix}"
    return raw_dir / f"{split}.csv"
