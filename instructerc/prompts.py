"""Prompt builders, one per task. Pure functions of a dialogue: no I/O, no model.

The ERC template follows InstructERC (instruction, a window of history ending with the target
utterance, retrieved demonstrations, label statement); the question comes last so the answer
directly follows it.
"""

from __future__ import annotations

from typing import Sequence

from instructerc.dialogue import Demonstration, Dialogue

INSTRUCTION = "Now you are an expert in sentiment and emotional analysis."
CONVERSATION = "The following conversation noted between '### ###' involves several speakers."


def speaker_names(dialogue: Dialogue, mode: str = "name") -> dict[str, str]:
    """How each speaker is shown: their own name, or `Speaker_i` by order of first appearance."""
    if mode == "name":
        return {s: s for s in dialogue.speakers}
    if mode == "index":
        return {s: f"Speaker_{i}" for i, s in enumerate(dialogue.speakers)}
    raise ValueError(f"unknown speaker mode {mode!r} (name or index)")


def _line(name: str, text: str) -> str:
    return f'{name}: "{text}"'


def _history(dialogue: Dialogue, start: int, end: int, names: dict[str, str]) -> str:
    lines = [_line(names[u.speaker], u.text) for u in dialogue.utterances[start:end]]
    return "### " + "\n".join(lines) + " ###"


def _demonstration_block(demos: Sequence[Demonstration]) -> str:
    lines = [f'{_line(d.speaker, d.text)} -> {d.emotion}' for d in demos]
    return "Here are similar utterances from other conversations with their emotional labels:\n" + "\n".join(lines)


def erc_prompt(
    dialogue: Dialogue,
    turn: int,
    labels: Sequence[str],
    window: int = 12,
    demonstrations: Sequence[Demonstration] = (),
    speaker_mode: str = "name",
) -> str:
    """Main task: the emotion of utterance `turn`, seeing up to `window` previous utterances."""
    names = speaker_names(dialogue, speaker_mode)
    target = dialogue.utterances[turn]
    parts = [f"{INSTRUCTION} {CONVERSATION}", _history(dialogue, max(0, turn - window), turn + 1, names)]
    if demonstrations:
        parts.append(_demonstration_block(demonstrations))
    parts.append(
        f"Please select the emotional label of <{_line(names[target.speaker], target.text)}> "
        f"from <{', '.join(labels)}>:"
    )
    return "\n".join(parts)


def speaker_prompt(dialogue: Dialogue, turn: int, speaker_mode: str = "name") -> tuple[str, list[str]]:
    """Stage-1 warm-up: who said this utterance, without context, from the dialogue's speakers.

    Returns the prompt and the candidate list it states.
    """
    names = speaker_names(dialogue, speaker_mode)
    candidates = list(names.values())
    text = dialogue.utterances[turn].text
    prompt = (
        f"{INSTRUCTION} Identify who speaks the following utterance, taken from a conversation.\n"
        f'Utterance: "{text}"\n'
        f"Please select the speaker of this utterance from <{', '.join(candidates)}>:"
    )
    return prompt, candidates


def predict_prompt(
    dialogue: Dialogue,
    turn: int,
    labels: Sequence[str],
    window: int = 12,
    speaker_mode: str = "name",
) -> str:
    """Stage-2 auxiliary: the emotion of the next speaker from the history alone (turn >= 1)."""
    if turn < 1:
        raise ValueError("emotion prediction needs at least one previous utterance")
    names = speaker_names(dialogue, speaker_mode)
    nxt = names[dialogue.utterances[turn].speaker]
    return "\n".join([
        f"{INSTRUCTION} {CONVERSATION}",
        _history(dialogue, max(0, turn - window), turn, names),
        f"Based on the above historical utterances, the next utterance is spoken by <{nxt}>. "
        f"Please predict the emotional state of <{nxt}> from <{', '.join(labels)}>:",
    ])
