"""The released GPT-1 tokenizer: exact pipeline ids, fast path, special tokens, files."""

from __future__ import annotations

import pytest

pytest.importorskip("ftfy")
pytest.importorskip("spacy")

from gptkit.errors import GptkitError  # noqa: E402
from gptkit.openai_gpt import OpenAIGPTTokenizer, load_openai_tokenizer  # noqa: E402
from gptkit.openai_gpt.text import BPE, read_vocab, text_standardize  # noqa: E402
from gptkit.tokenizer import Tokenizer  # noqa: E402

# Two sentences and their ids under the released pipeline, as AllenNLP 0.9.0 recorded them
# independently (allennlp/tests/fixtures/openai_transformer/{text.txt,indexed_text.json}).
ALLENNLP_TEXT = [
    "I decided to rent a movie when friends came over last night. After looking through selections "
    "we decided on comedy.",
    "James realizes one afternoon that he hasn't left his house all day. A !@#!@OOVTOKEN "
    "1234567890551231231231231.",
]
ALLENNLP_IDS = [
    [249, 1925, 485, 6231, 246, 4121, 669, 1662, 939, 715, 1009, 995, 239, 861, 1081, 822, 37700, 606,
     1925, 504, 20267, 239],
    [2703, 13819, 566, 2795, 525, 487, 980, 538, 999, 524, 1114, 589, 850, 239, 246, 267, 305, 285, 267,
     67, 3906, 23, 18493, 13103, 43, 38380, 49, 50, 54, 53, 48, 31446, 13103, 43, 13103, 43, 13103, 43,
     13103, 15870, 239],
]  # fmt: skip

PROSE = [
    "Mr. Smith didn't pay $5.50 for the U.S. company's 10% stake, e.g. in Sept. 2017; it's \"fine\" -- really…",
    "“We can’t wait,” she said at 10:30 a.m. on Jan. 5 — and we’ll see what happens.",
    "The 9th Circuit court (in San Francisco) ruled 3-0 against the order!",
]


@pytest.fixture(scope="module")
def exact() -> OpenAIGPTTokenizer:
    return load_openai_tokenizer(exact=True)


@pytest.fixture(scope="module")
def fast() -> OpenAIGPTTokenizer:
    return load_openai_tokenizer(exact=False)


def test_exact_ids_match_allennlp_record(exact):
    assert exact.encode_batch(ALLENNLP_TEXT) == ALLENNLP_IDS
    assert [exact.encode(t) for t in ALLENNLP_TEXT] == ALLENNLP_IDS


def test_known_word_ids(exact, fast):
    # GPT1.md: very</w> = 963, positive</w> = 6353, negative</w> = 9503; <unk> = 0
    for tok in (exact, fast):
        assert tok.encode("very positive negative") == [963, 6353, 9503]
        assert tok.token_to_id("<unk>") == 0


@pytest.mark.parametrize("kind", ["exact", "fast"])
def test_special_tokens(kind, request):
    tok = request.getfixturevalue(kind)
    assert (tok.start_id, tok.delimiter_id, tok.classify_id) == (40478, 40479, 40480)
    assert tok.vocab_size == 40481


def test_text_standardize():
    assert text_standardize("a—b–c―d … x´s") == "a - b - c - d ... x's"
    assert text_standardize("wow!!!(yes)  ok") == "wow !!! ( yes ) ok"
    assert text_standardize("one\n\n two\t three") == "one \n two three"


def test_bpe_word_end_and_newline_quirk(exact):
    encoder, merges = read_vocab()
    bpe = BPE(merges)
    assert bpe("very") == ["very</w>"]
    assert all(p in encoder for p in bpe("unbelievably"))
    assert bpe("unbelievably")[-1].endswith("</w>")
    # A newline run becomes spaCy's "\n " token, which the release's BPE maps to "\n</w>" (40477).
    assert exact.encode("one\n\ntwo") == exact.encode("one") + [40477] + exact.encode("two")


def test_fast_agrees_with_exact_on_prose(exact, fast):
    assert fast.encode_batch(PROSE) == exact.encode_batch(PROSE)


def test_fast_decodes(fast):
    assert fast.decode(fast.encode("Hello, world.")) == "hello , world ."


def test_fingerprints_tell_pipelines_apart(exact, fast):
    assert exact.fingerprint != fast.fingerprint
    assert exact.fingerprint == load_openai_tokenizer(exact=True).fingerprint


def test_saved_file_round_trips(tmp_path, exact, fast):
    path = tmp_path / "tokenizer.json"
    exact.save(path)
    plain = Tokenizer.from_file(path)  # usable without gptkit.openai_gpt: the fast pipeline
    assert plain.encode(PROSE[0]) == fast.encode(PROSE[0])
    assert plain.fingerprint == fast.fingerprint
    again = load_openai_tokenizer(exact=True, path=path)
    assert again.encode(PROSE[1]) == exact.encode(PROSE[1])
    assert again.fingerprint == exact.fingerprint


def test_exact_without_extra_is_a_user_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "spacy", None)
    with pytest.raises(GptkitError, match="gptkit\\[openai\\]"):
        load_openai_tokenizer(exact=True)
    assert load_openai_tokenizer(exact=False).encode("very") == [963]
