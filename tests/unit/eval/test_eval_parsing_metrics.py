"""Label parsing, final-number extraction, classification metrics and the sign test on hand-made cases."""

import pytest

from tuneforge.eval.metrics import UNPARSED, classification_metrics, scalar_metrics, sign_test_p
from tuneforge.eval.parsing import extract_number, numbers_equal, parse_label

BIN = ["0", "1"]


@pytest.mark.parametrize("text,expected", [
    ("1", "1"),                          # rule 1: exact
    (" 0\n", "0"),                       # rule 1 after strip
    ("**1**", "1"),                      # rule 2: markdown / punctuation stripped
    ("'0'.", "0"),
    ("1 - positive", "1"),               # rule 3: first token
    ("The sentiment is 1.", "1"),        # rule 4: exactly one label mentioned
    ("It is either 0 or 1", None),       # two labels mentioned -> unparseable
    ("positive", None),                  # no label at all
    ("10", None),                        # "1" inside "10" is not the label
    ("", None),
])
def test_parse_binary_labels(text, expected):
    assert parse_label(text, BIN) == expected


def test_parse_word_labels_prefers_the_longer_label():
    labels = ["positive", "very positive", "negative"]
    assert parse_label("Very positive!", labels) == "very positive"
    assert parse_label("I'd say very positive overall", labels) == "very positive"
    assert parse_label("Negative, because the plot drags", labels) == "negative"
    assert parse_label("positive or negative", labels) == "positive"  # rule 3: first token


@pytest.mark.parametrize("text,expected", [
    ("5 + 3 = 8 apples.\n#### 8", "8"),
    ("So the total is 12 and the answer is $1,234.", "1234"),
    ("The answer is: -3.5", "-3.5"),
    ("3 apples and 4 pears make 7", "7"),
    ("I do not know", None),
])
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_numbers_equal():
    assert numbers_equal("12.0", "12")
    assert numbers_equal("1,000", "1000")
    assert not numbers_equal("12", "13")
    assert not numbers_equal(None, "1")


def test_classification_metrics_by_hand():
    golds = ["1", "1", "1", "0", "0", "0"]
    preds = ["1", "1", "0", "0", None, "1"]
    m = classification_metrics(golds, preds, BIN)
    assert m["confusion"]["cols"] == ["0", "1", UNPARSED]
    assert m["confusion"]["matrix"] == [[1, 1, 1], [1, 2, 0]]
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["per_label"]["0"]["precision"] == pytest.approx(0.5)
    assert m["per_label"]["0"]["recall"] == pytest.approx(1 / 3)
    assert m["per_label"]["0"]["f1"] == pytest.approx(0.4)
    assert m["per_label"]["1"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_precision"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["macro_recall"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((0.4 + 2 / 3) / 2)
    assert m["n_unparseable"] == 1
    flat = scalar_metrics(m, "eval_cls/")
    assert flat["eval_cls/accuracy"] == 0.5 and "eval_cls/confusion" not in flat


def test_sign_test():
    assert sign_test_p(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(5, 5) == 1.0
