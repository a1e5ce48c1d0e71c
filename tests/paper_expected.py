"""What the released InstructERC `data_process.py` writes for the fixture pickles of erc_fixtures.py
with `--historical_window 1`: written out by hand from reading that code, not produced by this
project. Keys name its output files: window/<split>.json (ERC records), speaker/train.json
(stage 1), predict/train.json (emotion-prediction mode: the ERC prompt, '***', the prediction
prompt). Each entry is (input, target), in file order. MELD text is kept as the pickle holds it
('\x92' for ’): the test repairs it as `prepare` does, the one intended difference.
"""

H = "Now you are expert of sentiment and emotional analysis. "
C = "The following conversation noted between '### ###' involves several speakers. ### "
MELD_LABELS = "<neutral, surprise, fear, sad, joyful, disgust, angry>:"
EMORY_LABELS = "<Joyful, Mad, Peaceful, Neutral, Sad, Powerful, Scared>:"
IEMOCAP_LABELS = "<happy, sad, neutral, angry, excited, frustrated>:"
NINE = "<Speaker_0, Speaker_1, Speaker_2, Speaker_3, Speaker_4, Speaker_5, Speaker_6, Speaker_7, Speaker_8>:"
TWO = "<Speaker_0, Speaker_1>:"
PREDICT = "Based on the above historical utterances, next utterance is spoken by "

MELD_ERC_TRAIN = [
    (H + C + '\t Speaker_0:"It\x92s fine." ### Please select the emotional label of < Speaker_0:"It\x92s fine."> from '
     + MELD_LABELS, "neutral"),
    (H + C + '\t Speaker_0:"It\x92s fine."\t Speaker_1:"Wait\x85 really?" ### Please select the emotional label of '
     '< Speaker_1:"Wait\x85 really?"> from ' + MELD_LABELS, "joyful"),
]
EMORY_ERC_TRAIN = [
    (H + C + '\t Speaker_0:"Hey." ### Please select the emotional label of < Speaker_0:"Hey."> from ' + EMORY_LABELS,
     "Joyful"),
    (H + C + '\t Speaker_0:"Hey."\t Speaker_1:"Hi, Mon." ### Please select the emotional label of < Speaker_1:"Hi, Mon.">'
     ' from ' + EMORY_LABELS, "Neutral"),
    (H + C + '\t Speaker_1:"Hi, Mon."\t Speaker_0:"Get out!" ### Please select the emotional label of '
     '< Speaker_0:"Get out!"> from ' + EMORY_LABELS, "Mad"),
]
IEMOCAP_ERC_TRAIN = [
    (H + C + '\t Speaker_1:"Hello." ### Please select the emotional label of < Speaker_1:"Hello."> from ' + IEMOCAP_LABELS,
     "happy"),
    (H + C + '\t Speaker_1:"Hello."\t Speaker_0:"Ugh." ### Please select the emotional label of < Speaker_0:"Ugh."> from '
     + IEMOCAP_LABELS, "frustrated"),
    (H + C + '\t Speaker_0:"Ugh."\t Speaker_1:"Yes!" ### Please select the emotional label of < Speaker_1:"Yes!"> from '
     + IEMOCAP_LABELS, "excited"),
]

EXPECTED = {
    "meld": {
        "window/train.json": MELD_ERC_TRAIN,
        "window/valid.json": [
            (H + C + '\t Speaker_0:"No!" ### Please select the emotional label of < Speaker_0:"No!"> from ' + MELD_LABELS,
             "angry"),
        ],
        "window/test.json": [
            (H + C + '\t Speaker_0:"Wow." ### Please select the emotional label of < Speaker_0:"Wow."> from ' + MELD_LABELS,
             "surprise"),
            (H + C + '\t Speaker_0:"Wow."\t Speaker_1:"Sad." ### Please select the emotional label of < Speaker_1:"Sad.">'
             ' from ' + MELD_LABELS, "sad"),
            (H + C + '\t Speaker_1:"Sad."\t Speaker_0:"Scary." ### Please select the emotional label of '
             '< Speaker_0:"Scary."> from ' + MELD_LABELS, "fear"),
        ],
        "speaker/train.json": [
            (H + "Please select the Speaker label of the utterance <Speaker: It\x92s fine.> from " + NINE, "Speaker_0"),
            (H + "Please select the Speaker label of the utterance <Speaker: Wait\x85 really?> from " + NINE, "Speaker_1"),
        ],
        "predict/train.json": [
            (MELD_ERC_TRAIN[0][0] + "***" + MELD_ERC_TRAIN[0][0], "neutral"),
            (MELD_ERC_TRAIN[1][0] + "***" + H + C + '\t Speaker_0:"It\x92s fine."###' + PREDICT
             + "<1>, please predict the emotion states of <1> from " + MELD_LABELS, "joyful"),
        ],
    },
    "emorynlp": {
        "window/train.json": EMORY_ERC_TRAIN,
        "window/valid.json": [
            (H + C + '\t Speaker_0:"Oh." ### Please select the emotional label of < Speaker_0:"Oh."> from ' + EMORY_LABELS,
             "Sad"),
        ],
        "window/test.json": [
            (H + C + '\t Speaker_0:"Boo!" ### Please select the emotional label of < Speaker_0:"Boo!"> from '
             + EMORY_LABELS, "Scared"),
        ],
        "speaker/train.json": [
            (H + "Please select the Speaker label of the utterance <Speaker: Hey.> from " + NINE, "Speaker_0"),
            (H + "Please select the Speaker label of the utterance <Speaker: Hi, Mon.> from " + NINE, "Speaker_1"),
            (H + "Please select the Speaker label of the utterance <Speaker: Get out!> from " + NINE, "Speaker_0"),
        ],
        "predict/train.json": [
            (EMORY_ERC_TRAIN[0][0] + "***" + EMORY_ERC_TRAIN[0][0], "Joyful"),
            (EMORY_ERC_TRAIN[1][0] + "***" + H + C + '\t Speaker_0:"Hey."###' + PREDICT
             + "<1>, please predict the emotion states of <1> from " + EMORY_LABELS, "Neutral"),
            (EMORY_ERC_TRAIN[2][0] + "***" + H + C + '\t Speaker_1:"Hi, Mon."###' + PREDICT
             + "<0>, please predict the emotion states of <0> from " + EMORY_LABELS, "Mad"),
        ],
    },
    "iemocap": {
        "window/train.json": IEMOCAP_ERC_TRAIN,
        "window/valid.json": [
            (H + C + '\t Speaker_0:"Hm." ### Please select the emotional label of < Speaker_0:"Hm."> from '
             + IEMOCAP_LABELS, "neutral"),
            (H + C + '\t Speaker_0:"Hm."\t Speaker_1:"Stop it." ### Please select the emotional label of '
             '< Speaker_1:"Stop it."> from ' + IEMOCAP_LABELS, "angry"),
        ],
        "window/test.json": [
            (H + C + '\t Speaker_1:"Oh." ### Please select the emotional label of < Speaker_1:"Oh."> from '
             + IEMOCAP_LABELS, "sad"),
            (H + C + '\t Speaker_1:"Oh."\t Speaker_0:"Ok." ### Please select the emotional label of < Speaker_0:"Ok.">'
             ' from ' + IEMOCAP_LABELS, "neutral"),
        ],
        "speaker/train.json": [
            (H + "Please select the Speaker label of the utterance <Speaker: Hello.> from " + TWO, "Speaker_1"),
            (H + "Please select the Speaker label of the utterance <Speaker: Ugh.> from " + TWO, "Speaker_0"),
            (H + "Please select the Speaker label of the utterance <Speaker: Yes!> from " + TWO, "Speaker_1"),
        ],
        "predict/train.json": [
            (IEMOCAP_ERC_TRAIN[0][0] + "***" + IEMOCAP_ERC_TRAIN[0][0], "happy"),
            (IEMOCAP_ERC_TRAIN[1][0] + "***" + H + C + '\t Speaker_1:"Hello."###' + PREDICT
             + "<0>, please predict the emotion states of <0> from " + IEMOCAP_LABELS, "frustrated"),
            (IEMOCAP_ERC_TRAIN[2][0] + "***" + H + C + '\t Speaker_0:"Ugh."###' + PREDICT
             + "<1>, please predict the emotion states of <1> from " + IEMOCAP_LABELS, "excited"),
        ],
    },
}

# The released data_process_plain.py (the paper's plain-LoRA baseline): the utterance alone.
PLAIN = {
    "emorynlp": {"window/train.json": [
        ("Please select the emotional label of <Hey.> from " + EMORY_LABELS, "Joyful"),
        ("Please select the emotional label of <Hi, Mon.> from " + EMORY_LABELS, "Neutral"),
        ("Please select the emotional label of <Get out!> from " + EMORY_LABELS, "Mad"),
    ]},
    "meld": {"window/test.json": [
        ("Please select the emotional label of <Wow.> from " + MELD_LABELS, "surprise"),
        ("Please select the emotional label of <Sad.> from " + MELD_LABELS, "sad"),
        ("Please select the emotional label of <Scary.> from " + MELD_LABELS, "fear"),
    ]},
}
