import pytest

from gptkit.errors import DataError
from gptkit.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok(news_text_module):
    return Tokenizer.train([news_text_module], vocab_size=600)


@pytest.fixture(scope="module")
def news_text_module():
    from conftest import NEWS

    return NEWS.read_text()


def test_special_tokens_follow_learned_vocabulary(tok):
    learned = tok.vocab_size - 3
    assert (tok.start_id, tok.delimiter_id, tok.classify_id) == (learned, learned + 1, learned + 2)
    assert tok.token_to_id("<unk>") == 0
    assert tok.vocab_size <= 603


def test_encode_decode_lowercased_words(tok):
    ids = tok.encode("The President said")
    assert ids == tok.encode("the president said")
    assert tok.decode(ids) == "the president said"
    assert tok.encode_batch(["the president", "said"]) == [tok.encode("the president"), tok.encode("said")]


def test_save_load_roundtrip_keeps_fingerprint(tok, tmp_path):
    tok.save(tmp_path / "t" / "tokenizer.json")
    again = Tokenizer.from_file(tmp_path / "t" / "tokenizer.json")
    assert again.fingerprint == tok.fingerprint
    assert again.encode("markets fell sharply") == tok.encode("markets fell sharply")


def test_bad_tokenizer_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        Tokenizer.from_file(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not a valid tokenizers JSON"):
        Tokenizer.from_file(tmp_path / "bad.json")
