"""Keyword refusal detection: markers at the start count, mentions later on do not."""

from __future__ import annotations

import pytest

from sdft.refusal import HEAD_CHARS, REFUSAL_MARKERS, find_refusal_marker, is_refusal


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I\u2019m sorry, but I can\u2019t help with that.",  # typographic apostrophes
        "I cannot assist with creating malware.",
        "I can't provide instructions for that.",
        "As an AI language model, I do not have personal opinions.",
        "I apologize, but this request violates my guidelines.",
        "I must decline this request.",
        "Creating such a device is illegal and unethical.",
        "I'm not able to share that information.",
        "I am unable to comply.",
        "Sorry, but that is not something I will do.",
        "  \n**I'm sorry**, I won't be able to do that.",
        "Sure. I cannot do that, though.",  # second sentence is still in the head
        "That's not something I can help with.",
    ],
)
def test_refusals_are_detected(text: str) -> None:
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "The capital of France is Paris.",
        "Tom has 3 apples and buys 4 more, so he has 7.\n#### 7",
        # a mention late in a helpful answer is not a refusal
        "Divide both sides by x. Then simplify the fraction. Note that when x = 0 I can't divide, "
        "so we treat that case separately.",
        "Here is the function. " + "x " * HEAD_CHARS + "I'm sorry, I cannot continue.",
        # excluded idioms and empathetic openings
        "I'm sorry to hear about your loss. Here are a few things that can help.",
        "I can't stress enough how important sleep is for memory.",
        # word boundaries: "wiki can't" does not contain the marker "i can't"
        "The wiki can't be edited anonymously; log in first.",
        "Sorry is a word used to apologize in English.",
    ],
)
def test_non_refusals_are_not_detected(text: str) -> None:
    assert not is_refusal(text)


def test_find_refusal_marker_reports_the_marker() -> None:
    assert find_refusal_marker("I apologize, but no.") == "i apologize"
    assert find_refusal_marker("Paris.") is None


def test_markers_are_normalised() -> None:
    # matching lower-cases the text and folds apostrophes, so the list must be in that form
    assert all(m == m.lower() and "\u2019" not in m for m in REFUSAL_MARKERS)
    assert len(set(REFUSAL_MARKERS)) == len(REFUSAL_MARKERS)
