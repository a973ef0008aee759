"""Korean answer metrics against values worked out by hand, and answer/quote extraction."""

from __future__ import annotations

import pytest

from koraft.evaluation.answers import check_quotes, extract_answer
from koraft.evaluation.metrics import LexicalScorer, char_f1, exact_match


@pytest.fixture(scope="module")
def scorer() -> LexicalScorer:
    return LexicalScorer()


def scores(scorer: LexicalScorer, prediction: str, reference: str) -> dict[str, float]:
    result = scorer.score([prediction], [reference])
    values = {name: float(array[0]) for name, array in result.per_sample.items()}
    values.update({name: scorer.corpus_score(name, stats) for name, stats in result.corpus_stats.items()})
    return values


def test_rouge_scores_korean_where_the_packages_default_tokenizer_scores_zero(scorer):
    from rouge_score.rouge_scorer import RougeScorer

    sentence = "서울에서 만나요"
    default = RougeScorer(["rouge1", "rougeL"]).score(sentence, sentence)
    assert default["rouge1"].fmeasure == 0.0 and default["rougeL"].fmeasure == 0.0  # Hangul is deleted
    ours = scores(scorer, sentence, sentence)
    for name in ("rouge1", "rouge2", "rougeL", "rouge1_char", "rouge2_char", "rougeL_char", "exact_match", "f1"):
        assert ours[name] == 1.0, name
    assert ours["bleu"] == pytest.approx(100.0) and ours["chrf"] == pytest.approx(100.0)


def test_hand_checked_pair(scorer):
    # Kiwi: 서울/NNP 특별시/NNG 에서/JKB 만나/VV 어요/EF against 서울 에서 만나 어요.
    prediction, reference = "서울 특별시에서 만나요", "서울에서 만나요"
    assert scorer.tokenize([prediction, reference]) == {
        prediction: ["서울", "특별시", "에서", "만나", "어요"], reference: ["서울", "에서", "만나", "어요"]}
    got = scores(scorer, prediction, reference)
    # unigrams: 4 shared, P 4/5, R 4/4; LCS 4 as well
    assert got["rouge1"] == pytest.approx(8 / 9) and got["rougeL"] == pytest.approx(8 / 9)
    # bigrams: 서울-에서 is broken; 에서-만나, 만나-어요 shared: P 2/4, R 2/3
    assert got["rouge2"] == pytest.approx(4 / 7)
    # characters without spaces: 10 vs 7, all 7 of the reference's shared; 5 of 9 / 6 bigrams
    assert got["rouge1_char"] == pytest.approx(14 / 17) and got["rougeL_char"] == pytest.approx(14 / 17)
    assert got["rouge2_char"] == pytest.approx(2 / 3)
    assert got["f1"] == pytest.approx(14 / 17) and got["exact_match"] == 0.0  # KorQuAD: characters, no spaces
    # BLEU precisions 4/5, 2/4, 1/3 and no 4-gram match (exp smoothing: 1/(2*2)); prediction longer: no penalty
    assert got["bleu"] == pytest.approx(100 * (0.8 * 0.5 * (1 / 3) * 0.25) ** 0.25, abs=1e-6)


def test_particle_only_difference(scorer):
    got = scores(scorer, "서울", "서울에서")
    assert got["exact_match"] == 0.0
    assert got["f1"] == pytest.approx(2 / 3)  # 2 of 2 predicted characters, 2 of 4 reference characters
    assert got["rouge1"] == pytest.approx(2 / 3)  # morphemes 서울 vs 서울 에서
    assert got["rouge2"] == 0.0  # one morpheme has no bigram
    # chrF (beta 2) over the orders both sides have: chars P 2/2 R 2/4, bigrams P 1/1 R 1/3
    precision, recall = (1 + 1) / 2, (1 / 2 + 1 / 3) / 2
    assert got["chrf"] == pytest.approx(100 * 5 * precision * recall / (4 * precision + recall))


def test_spacing_difference(scorer):
    got = scores(scorer, "서울 특별시", "서울특별시")
    assert got["exact_match"] == 0.0  # KorQuAD's EM keeps single spaces
    assert got["f1"] == 1.0 and got["rouge1"] == 1.0 and got["rougeL_char"] == 1.0  # Kiwi: 서울 + 특별시 both
    assert got["chrf"] == pytest.approx(100.0)  # chrF ignores whitespace


def test_disjoint_answers_score_zero(scorer):
    got = scores(scorer, "부산", "서울")
    assert all(value == 0.0 for value in got.values()), got
    assert scores(scorer, "", "봄")["f1"] == 0.0


def test_korquad_normalization():
    assert exact_match("《별미의 노래》", "별미의 노래") == 1.0  # KorQuAD strips these brackets
    assert exact_match("Hello,  World!", "hello world") == 1.0
    assert char_f1("1997년", "1997 년") == 1.0
    assert char_f1("약 80만 명", "80만명") == pytest.approx(2 * (4 / 5) * 1 / (4 / 5 + 1))


def test_corpus_scores_match_sacrebleu_on_any_subset(scorer):
    from sacrebleu.metrics import BLEU, CHRF

    predictions = ["서울 특별시에서 만나요", "봄에 먹는 떡입니다", "1997년에 발사되었다", "경기도"]
    references = ["서울에서 만나요", "주로 봄에 먹습니다", "1997년", "경기도에 속해 있습니다"]
    result = scorer.score(predictions, references)
    tokens = scorer.tokenize(predictions + references)
    for subset in ([0, 1, 2, 3], [1, 3], [2, 2, 0]):  # a bootstrap draw repeats samples
        hypotheses = [predictions[i] for i in subset]
        refs = [references[i] for i in subset]
        bleu = BLEU(tokenize="none").corpus_score([" ".join(tokens[h]) for h in hypotheses],
                                                  [[" ".join(tokens[r]) for r in refs]]).score
        assert scorer.corpus_score("bleu", result.corpus_stats["bleu"][subset]) == pytest.approx(bleu)
        chrf = CHRF().corpus_score(hypotheses, [refs]).score
        assert scorer.corpus_score("chrf", result.corpus_stats["chrf"][subset]) == pytest.approx(chrf)


def test_signatures_name_the_tokenization(scorer):
    signatures = scorer.signatures()
    assert "tok:none" in signatures["bleu"] and "pretok:kiwi-" in signatures["bleu"]
    assert "nc:6" in signatures["chrf"] and "version:" in signatures["chrf"]


@pytest.mark.parametrize("output, answer", [
    ("##Reason: ...\n<ANSWER>: 봄", "봄"),
    ("근거를 찾았다. <ANSWER> : 봄\n", "봄"),
    ("<answer>:봄", "봄"),
    ("<ANSWER>：  여름과 봄", "여름과 봄"),  # full-width colon
    ("<ANSWER>: 틀린 답\n다시 보니 <ANSWER>:\n\n가을", "가을"),  # the last marker, first non-empty line
])
def test_answer_extraction_tolerates_spacing_and_case(output, answer):
    assert extract_answer(output, expects_reasoning=True).text == answer
    assert extract_answer(output, expects_reasoning=True).extracted


def test_missing_marker_means_no_answer_only_when_one_was_asked_for():
    assert extract_answer("봄에 먹는다", expects_reasoning=True) == extract_answer("", expects_reasoning=True)
    assert not extract_answer("봄에 먹는다", expects_reasoning=True).extracted
    plain = extract_answer("  봄에 먹는다 ", expects_reasoning=False)
    assert plain.text == "봄에 먹는다" and plain.extracted


def test_quote_validity_counts_verbatim_quotes_only():
    documents = ["은울 도토리떡은 봄에 먹는다. 만드는 데 50분이 걸린다.", "람금 타이거즈는 8회 우승했다."]
    output = ("##begin_quote## 은울 도토리떡은 봄에 먹는다. ##end_quote## 그리고 "
              "##begin_quote##도토리떡은 여름에 먹는다##end_quote## <ANSWER>: 봄")
    check = check_quotes(output, documents)
    assert check.quotes == 2 and check.verbatim == 1
    assert check_quotes("##begin_quote##8회 우승##end_quote##", documents).verbatim == 1
    assert check_quotes("인용 없음", documents).quotes == 0
