"""The doctor's text helpers on Chinese, Japanese and Korean: the one CJK definition of tuneforge.utils.text."""

from __future__ import annotations

from tuneforge.data.doctor import text as tx
from tuneforge.data.doctor.minhash import near_pairs, shingles
from tuneforge.utils.text import cjk_share


def test_chinese_is_one_token_per_character_also_next_to_latin_words():
    assert tx.tokens("用Python写代码。") == ["用", "python", "写", "代", "码"]  # punctuation dropped
    assert tx.tokens("第3章") == ["第", "3", "章"]
    assert tx.template_key("第3章 开始") == "第 0 章开始"
    assert tx.distinct_n(["我爱你", "我爱他"], 1) == round(4 / 6, 4)


def test_japanese_kana_and_kanji():
    text = "東京へ行きます。カタカナ、ひらがな"
    assert tx.tokens(text)[:6] == ["東", "京", "へ", "行", "き", "ま"]
    assert "。" not in tx.tokens(text) and "、" not in tx.tokens(text)
    assert tx.script_of(text) == "cjk"
    assert tx.leading(["東京へ行きます", "東京へ帰ります"], 3) == [("東京へ", 2)]
    assert tx.leading(["Pythonで書く"], 2) == [("python で", 1)]


def test_korean_hangul():
    assert tx.tokens("안녕하세요 세계") == ["안", "녕", "하", "세", "요", "세", "계"]
    assert tx.script_of("안녕하세요, 반갑습니다") == "cjk"
    assert cjk_share("안녕 hello") == 2 / 7


def test_cjk_text_uses_short_shingles_and_finds_near_duplicates():
    zh = "这家酒店的房间很干净，服务员态度非常好，早餐种类丰富，离地铁站很近。"
    assert {len(s) for s in shingles(zh)} == {3}
    assert {len(s) for s in shingles("plain english words here")} == {5}
    assert [(i, j) for i, j, _ in near_pairs([zh, zh.replace("非常好", "特别好"), "今天天气很好，我们去公园散步吧。"],
                                              threshold=0.6)] == [(0, 1)]
