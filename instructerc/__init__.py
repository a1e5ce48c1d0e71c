"""instructerc: Emotion Recognition in Conversation as instruction following.

Data flows one way, one module per stage:
raw files -> readers (Dialogue) -> retrieval (Demonstration) -> prompts (PromptRecord)
-> models/train -> decode (predictions) -> metrics.
"""

__version__ = "0.1.0"
