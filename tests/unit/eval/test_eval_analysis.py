"""Every error flag fires on a case made for it and stays quiet on a near miss."""

from tuneforge.eval.analysis import FLAGS, Vocabulary, flag_answer, summarize_flags, tail_loop

REF10 = "the film is a warm and funny story about two old friends"  # 12 content tokens


def test_empty():
    assert "empty" in flag_answer("   ")
    assert "empty" not in flag_answer("0")


def test_did_not_stop():
    assert "did_not_stop" in flag_answer("and then", finish_reason="length")
    assert "did_not_stop" not in flag_answer("and then", finish_reason="stop")


def test_repetition_tail_loop_and_repeated_ngrams():
    assert tail_loop("i think i think i think i think".split()) == 8
    assert "repetition" in flag_answer("I think I think I think I think")
    looped = "The movie is good. The movie is good. The movie is good."
    assert "repetition" in flag_answer(looped)
    assert "repetition" not in flag_answer("The cat sat on the mat and the dog lay on the rug.")
    assert "repetition" not in flag_answer("ha ha")  # too short to be a loop


def test_too_long_threshold():
    ref = "yes"  # limit = max(2 * 1, 1 + 10) = 11 tokens
    assert "too_long" not in flag_answer(" ".join(["w"] * 11), ref)
    assert "too_long" in flag_answer(" ".join(["w"] * 12), ref)


def test_too_short_threshold():
    assert "too_short" in flag_answer("a warm story", REF10)  # 3 < 0.5 * 12
    assert "too_short" not in flag_answer("a warm and funny story about friends", REF10)  # 7 >= 6
    assert "too_short" not in flag_answer("no", "yes")  # reference under 5 tokens: not judged


def test_wrong_format():
    assert "wrong_format" in flag_answer("maybe", parsed=False)
    assert "wrong_format" not in flag_answer("1", parsed=True)
    assert "wrong_format" not in flag_answer("free text", parsed=None)


def test_misspelling_catches_typos_of_known_words_only():
    vocab = Vocabulary(["Please receive the great movie", "Which movies did they make?"])
    flags = flag_answer("I recieve the grat movie", vocab=vocab)
    assert flags["misspelling"] == 2.0
    assert vocab.misspellings("I recieve the grat movie") == [("recieve", "receive"), ("grat", "great")]
    assert "misspelling" not in flag_answer("They received the movies and more", vocab=vocab)  # inflections
    assert "misspelling" not in flag_answer("An entirely unrelated vocabulary appears", vocab=vocab)
    # the documented false positive: a real word one letter from a known word
    assert vocab.near_miss("grate") == "great"


def test_summary_counts_and_worst_first():
    examples = [{"id": str(i), "prediction": "x", "flags": flag_answer("w " * n, "yes")} for i, n in
                enumerate([12, 30, 3])]
    s = summarize_flags(examples, worst=2)
    assert set(s["counts"]) == set(FLAGS)
    assert s["counts"]["too_long"] == 2
    assert [e["id"] for e in s["worst"]["too_long"]] == ["1", "0"]
    assert s["thresholds"]["too_long_slack"] == 10
