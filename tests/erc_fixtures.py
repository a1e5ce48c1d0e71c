"""Small raw-data files in each source format, written by the tests themselves.

`write_root(dir)` lays them out like ../shared/datasets: meld/, emorynlp/, cosmic/.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"


def meld_csv(rows: list[tuple[str, str, str, int, int]]) -> str:
    """rows: (utterance, speaker, emotion, dialogue_id, utterance_id)."""
    lines = [MELD_HEADER]
    for i, (text, speaker, emotion, did, uid) in enumerate(rows, 1):
        quoted = '"' + text.replace('"', '""') + '"'
        lines.append(f'{i},{quoted},{speaker},{emotion},neutral,{did},{uid},1,1,"00:00:01,000","00:00:02,000"\n')
    return "".join(lines)


MELD_SPLITS = {
    "train": [
        ("Hi, how’s it going?", "Ross", "neutral", 0, 0),
        ("Great!\nReally great.", "Rachel", "joy", 0, 1),
        ("Oh no.", "Ross", "sadness", 0, 3),  # the official files skip dropped utterances: 1 -> 3
        ("What?", "Joey", "surprise", 1, 0),
        ("Get out!", "Monica", "anger", 1, 1),
        ("Fine.", "Joey", "neutral", 1, 2),
        ("Ew.", "Phoebe", "disgust", 2, 0),
        ("Scary.", "Chandler", "fear", 2, 1),
    ],
    "dev": [("Okay.", "Ross", "neutral", 0, 0), ("Yes!", "Rachel", "joy", 0, 1)],
    "test": [("No.", "Monica", "anger", 0, 0), ("Why?", "Chandler", "surprise", 0, 1), ("Sure.", "Monica", "neutral", 0, 2)],
}

EMORY_HEADER = "Utterance,Speaker,Emotion,Scene_ID,Utterance_ID,Season,Episode,Start_Time,End_Time\n"


def emorynlp_csv(rows: list[tuple[str, list[str], str, tuple[int, int, int], int]]) -> str:
    """rows: (utterance, speakers, emotion, (season, episode, scene), utterance_id)."""
    lines = [EMORY_HEADER]
    for text, speakers, emotion, (season, episode, scene), uid in rows:
        quoted = '"' + text.replace('"', '""') + '"'
        spk = '"' + str(speakers).replace('"', '""') + '"'
        lines.append(f"{quoted},{spk},{emotion},{scene},{uid},{season},{episode},00:00:01.000,00:00:02.000\n")
    return "".join(lines)


EMORY_SPLITS = {
    "train": [
        ("Hey.", ["Monica Geller"], "Joyful", (1, 2, 1), 1),
        ("Hi, Mon.", ["Ross Geller", "Joey Tribbiani"], "Neutral", (1, 2, 1), 2),
        ("Get out!", ["Monica Geller"], "Mad", (1, 2, 1), 4),
        ("Calm down.", ["Rachel Green"], "Peaceful", (1, 2, 3), 1),
        ("I can do it.", ["Joey Tribbiani"], "Powerful", (1, 2, 3), 2),
    ],
    "dev": [("Oh.", ["Rachel Green"], "Sad", (2, 1, 1), 1), ("Boo!", ["Joey Tribbiani"], "Scared", (2, 1, 1), 2)],
    "test": [("Yay.", ["Phoebe Buffay"], "Joyful", (3, 1, 1), 1), ("Hm.", ["Ross Geller"], "Neutral", (3, 1, 1), 2)],
}


def emorynlp_json(rows) -> str:
    """The official layout, from the same rows as emorynlp_csv."""
    scenes: dict[str, list] = {}
    for i, (text, speakers, emotion, (season, episode, scene), uid) in enumerate(rows):
        sid = f"s{season:02d}_e{episode:02d}_c{scene:02d}"
        scenes.setdefault(sid, []).append(
            {"utterance_id": f"{sid}_u{uid:03d}", "speakers": speakers, "transcript": text, "emotion": emotion}
        )
    episodes = [{"episode_id": "e", "scenes": [{"scene_id": k, "utterances": v} for k, v in scenes.items()]}]
    return json.dumps({"season_id": "x", "episodes": episodes}, indent=2)


def one_hot(i: int, dtype=None) -> list:
    v = [0] * 9
    v[i] = 1
    return [dtype(x) for x in v] if dtype else v


def meld_pickle() -> bytes:
    """COSMIC layout: [speakers, emotions, sentiments, sentences, train, test, dev ids]."""
    speakers = {0: [one_hot(0), one_hot(1)], 1039: [one_hot(0)], 1153: [one_hot(0), one_hot(1), one_hot(0)]}
    emotions = {0: [0, 4], 1039: [6], 1153: [1, 3, 2]}
    sentiments = {0: [0, 1], 1039: [2], 1153: [0, 2, 2]}
    sentences = {0: ["It\x92s fine.", "Wait\x85 really?"], 1039: ["No!"], 1153: ["Wow.", "Sad.", "Scary."]}
    return pickle.dumps([speakers, emotions, sentiments, sentences, [0], [1153], [1039]], protocol=4)


def emorynlp_pickle() -> bytes:
    """COSMIC layout: [speakers (int32 one-hots), emotions, sentences, train, test, dev ids]."""
    i32 = np.int32
    speakers = {"1_2_1": [one_hot(0, i32), one_hot(1, i32), one_hot(0, i32)], "2_1_1": [one_hot(0, i32)], "3_1_1": [one_hot(0, i32)]}
    emotions = {"1_2_1": [0, 3, 1], "2_1_1": [4], "3_1_1": [6]}
    sentences = {"1_2_1": ["Hey.", "Hi, Mon.", "Get out!"], "2_1_1": ["Oh."], "3_1_1": ["Boo!"]}
    return pickle.dumps([speakers, emotions, sentences, ["1_2_1"], ["3_1_1"], ["2_1_1"]], protocol=4)


def iemocap_pickle() -> bytes:
    speakers = {"Ses01F_impro01": ["F", "M", "F"], "Ses02F_impro01": ["M", "F"], "Ses05F_impro01": ["F", "M"]}
    emotions = {"Ses01F_impro01": [0, 5, 4], "Ses02F_impro01": [2, 3], "Ses05F_impro01": [1, 2]}
    sentences = {"Ses01F_impro01": ["Hello.", "Ugh.", "Yes!"], "Ses02F_impro01": ["Hm.", "Stop it."], "Ses05F_impro01": ["Oh.", "Ok."]}
    return pickle.dumps([speakers, emotions, sentences, ["Ses01F_impro01"], ["Ses05F_impro01"], ["Ses02F_impro01"]], protocol=4)


def write_root(root: Path) -> Path:
    """meld/, emorynlp/ (CSV and JSON), cosmic/ under `root`, as in ../shared/datasets."""
    for sub in ("meld", "emorynlp", "cosmic"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for split, rows in MELD_SPLITS.items():
        (root / "meld" / f"{split}_sent_emo.csv").write_text(meld_csv(rows), encoding="utf-8")
    for split, tag in zip(EMORY_SPLITS, ("trn", "dev", "tst")):
        (root / "emorynlp" / f"emorynlp_{split}_final.csv").write_text(emorynlp_csv(EMORY_SPLITS[split]), encoding="utf-8")
        (root / "emorynlp" / f"emotion-detection-{tag}.json").write_text(emorynlp_json(EMORY_SPLITS[split]), encoding="utf-8")
    (root / "cosmic" / "meld.pkl").write_bytes(meld_pickle())
    (root / "cosmic" / "EmoryNLP.pkl").write_bytes(emorynlp_pickle())
    (root / "cosmic" / "iemocap.pkl").write_bytes(iemocap_pickle())
    return root
