"""BLEU / ROUGE / exact match against values computed by hand (comments show the counts), and our ROUGE against the
`rouge-score` package on English text."""

import math

import pytest

from tuneforge.utils.textmetrics import (bleu_tokenizer, content_tokens, corpus_bleu, exact_match, generation_metrics,
                                        lcs_length, metric_tokens, rouge_scores, sentence_bleu)

HYP = "the cat sat on the mat"
REF = "the cat is on the mat"


def test_tokens_split_chinese_by_character_and_keep_words():
    assert metric_tokens("我用Python写code, ok!") == ["我", "用", "Python", "写", "code", ",", "ok", "!"]
    assert content_tokens("Hello, World!") == ["hello", "world"]


def test_sentence_bleu_by_hand():
    # 1-grams 5/6; 2-grams 3/5 -> (3+1)/(5+1); 3-grams 1/4 -> 2/5; 4-grams 0/3 -> 1/4; equal lengths: BP = 1
    expected = 100 * (5 / 6 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25
    assert sentence_bleu(HYP, REF) == pytest.approx(expected)


def test_corpus_bleu_by_hand():
    # pair 1 identical (5/5, 4/4, 3/3, 2/2) + pair 2 (5/6, 3/5, 1/4, 0/3): 10/11, 7/9, 4/7, 2/5; lengths 11 = 11
    out = corpus_bleu(["a b c d e", HYP], ["a b c d e", REF])
    assert out["precisions"] == pytest.approx([100 * 10 / 11, 100 * 7 / 9, 100 * 4 / 7, 100 * 2 / 5])
    assert out["bp"] == 1.0
    assert out["bleu"] == pytest.approx(100 * (10 / 11 * 7 / 9 * 4 / 7 * 2 / 5) ** 0.25)


def test_corpus_bleu_exp_smoothing_and_brevity_penalty():
    # no matching 4-gram (0/3): sacrebleu's default exp smoothing counts it as 1 / (2 * 3)
    out = corpus_bleu([HYP], [REF])
    assert out["precisions"][3] == pytest.approx(100 / 6) and out["tokenizer"] == "13a"
    assert out["bleu"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25)
    out = corpus_bleu(["a b c d"], ["a b c d e f g h"])  # all precisions 1, BP = exp(1 - 8/4)
    assert out["bp"] == pytest.approx(math.exp(-1))
    assert out["bleu"] == pytest.approx(100 * math.exp(-1))


def test_bleu_scores_chinese_by_character():
    # 我 喜 欢 猫 vs 我 喜 欢 狗: 1-grams 3/4; add-one: 2-grams 3/4, 3-grams 2/3, 4-grams 1/2
    assert bleu_tokenizer(["我喜欢狗"]) == "zh" and bleu_tokenizer(["I like dogs"]) == "13a"
    assert sentence_bleu("我喜欢猫", "我喜欢狗") == pytest.approx(100 * (3 / 4 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)
    out = corpus_bleu(["我喜欢猫。", "今天天气很好"], ["我喜欢狗。", "今天天气很好"])
    assert (out["hyp_len"], out["ref_len"], out["tokenizer"]) == (11, 11, "zh")
    assert 0 < out["bleu"] < 100


def test_rouge_by_hand():
    s = rouge_scores(HYP, REF)
    assert s["rouge1"] == pytest.approx(100 * 5 / 6)  # overlap the,the,cat,on,mat = 5 of 6 each side
    assert s["rouge2"] == pytest.approx(60.0)  # "the cat", "on the", "the mat" = 3 of 5
    assert s["rougeL"] == pytest.approx(100 * 5 / 6)  # LCS "the cat on the mat"
    order = rouge_scores("a b c d", "d c b a")
    assert order["rouge1"] == pytest.approx(100.0)
    assert order["rouge2"] == 0.0
    assert order["rougeL"] == pytest.approx(25.0)  # LCS = 1 of 4


def test_rouge_chinese_by_character():
    s = rouge_scores("我喜欢猫", "我喜欢狗")
    assert s["rouge1"] == pytest.approx(75.0)  # 我 喜 欢 of 4
    assert s["rouge2"] == pytest.approx(100 * 2 / 3)  # 我喜, 喜欢 of 3
    assert s["rougeL"] == pytest.approx(75.0)


def test_lcs_and_exact_match():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    assert exact_match("  The Answer. ", "the answer")
    assert exact_match("北京。", "北京")
    assert not exact_match("42", "42.0")


def test_generation_metrics_aggregates():
    metrics, per = generation_metrics(["a b c d e", HYP], ["a b c d e", REF])
    assert metrics["n"] == 2
    assert metrics["exact_match"] == pytest.approx(50.0)
    assert metrics["rouge1"] == pytest.approx((100 + 100 * 5 / 6) / 2)
    assert per[0]["bleu"] == pytest.approx(100.0)


ENGLISH_PAIRS = [
    ("the cat sat on the mat", "the cat is on the mat"),
    ("The quick brown fox jumps over the lazy dog.", "A quick brown dog jumps over the lazy fox!"),
    ("I don't think it's a good idea, honestly.", "Honestly, I do not think that's a good idea."),
    ("Paris is the capital of France", "The capital of France is Paris; it has 2,100,000 people"),
    ("no overlap here", "completely different words"),
]


@pytest.mark.parametrize("hyp,ref", ENGLISH_PAIRS)
def test_rouge_matches_rouge_score_package_on_english(hyp, ref):
    from rouge_score import rouge_scorer

    theirs = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False).score(ref, hyp)
    ours = rouge_scores(hyp, ref)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert ours[key] == pytest.approx(100 * theirs[key].fmeasure), key
