"""Rule rewards the 656K story model can learn in a few RL steps (named in test configs as FILE:function)."""


def _words(completion) -> list[str]:
    text = completion[0]["content"] if isinstance(completion, list) else completion
    return [w.strip(".,!?\"'").lower() for w in text.split()]


def says_the(prompts, completions, completion_ids=None, **columns):
    """The share of the completion's words that are "the"."""
    return [sum(w == "the" for w in ws) / max(len(ws), 1) for ws in map(_words, completions)]
