"""The small shared helpers of the core: token display, run-size profiles, keep-k."""

import pytest
import torch

from lmscope.core import profiles
from lmscope.core.tensors import blas_matmul, keep_largest_abs
from lmscope.core.tokens import decoded_vocab, readable, token_text, token_texts, vocab_texts


class Tok:
    """A tokenizer whose token i decodes to a fixed string."""

    PIECES = ["a", " b", "c\n", "  d"]

    def __len__(self):
        return len(self.PIECES)

    def decode(self, ids):
        return "".join(self.PIECES[i] for i in ids)

    def batch_decode(self, rows):
        return [self.decode(r) for r in rows]


def test_token_text_is_one_rule_everywhere():
    tok = Tok()
    assert readable(" x\ny") == "\u2423x\\ny"
    assert token_texts(tok, [1, 2, 3]) == ["\u2423b", "c\\n", "\u2423\u2423d"]
    assert vocab_texts(tok, 6) == [token_text(tok, i) for i in range(4)] + ["<4>", "<5>"]
    assert decoded_vocab(tok, 4) == Tok.PIECES
    assert token_texts(None, [7, 8]) == ["<7>", "<8>"] == vocab_texts(None, 9)[7:]


class ByteTok(Tok):
    """Token 0 is a whole character; 1 and 2 are the two halves of 'é' (byte-level and SentencePiece forms)."""

    PIECES = ["é", "\ufffd", "\ufffd"]
    RAW = ["é", "Ã", "<0xA9>"]  # GPT-2's stand-in for byte 0xC3; a SentencePiece byte token

    def convert_ids_to_tokens(self, i):
        return self.RAW[i]


def test_partial_character_tokens_show_their_bytes():
    tok = ByteTok()
    assert token_texts(tok, [0, 1, 2]) == ["é", "\\xc3", "\\xa9"]
    assert vocab_texts(tok, 3) == token_texts(tok, [0, 1, 2])


@pytest.mark.slow
def test_real_tokenizer_pieces_are_readable(smollm):
    _, tok = smollm
    ids = tok("日本").input_ids
    texts = token_texts(tok, ids)
    assert "\ufffd" not in "".join(texts) and "\\x" in "".join(texts)
    assert sum("\ufffd" in t for t in vocab_texts(tok, len(tok))) <= 1  # a literal U+FFFD token may remain


def test_profile_settings_take_overrides_and_name_mistakes():
    table = {"quick": {"n": 2, "k": [1]}, "full": {"n": 20, "k": [1, 2]}}
    assert profiles.settings(table, "full", n=None) == {"n": 20, "k": [1, 2]}
    assert profiles.settings(table, "quick", n=5) == {"n": 5, "k": [1]}
    with pytest.raises(ValueError, match="Unknown profile 'fast'.*'quick', 'full'"):
        profiles.settings(table, "fast")
    with pytest.raises(ValueError, match="No run size named m"):
        profiles.settings(table, "quick", m=1)


def test_keep_largest_abs():
    m = torch.tensor([[0.5, -3.0, 1.0, 2.0]])
    assert torch.equal(keep_largest_abs(m, 2), torch.tensor([[0.0, -3.0, 0.0, 2.0]]))
    assert keep_largest_abs(m, 4) is m
    with pytest.raises(ValueError, match="positive integer"):
        keep_largest_abs(m, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blas_matmul_is_the_product(dtype):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, 7, generator=g, dtype=dtype), torch.randn(11, 7, generator=g, dtype=dtype)
    out = blas_matmul(a, b.T)  # leading dims kept, a transposed right factor read without a copy
    assert out.shape == (3, 5, 11) and out.dtype == dtype
    torch.testing.assert_close(out, a @ b.T)
    strided = a.transpose(0, 1)  # (5, 3, 7), not contiguous
    torch.testing.assert_close(blas_matmul(strided, b.T), strided @ b.T)


def test_blas_matmul_keeps_gradients_and_other_dtypes_in_torch():
    w = torch.randn(4, 6, requires_grad=True)
    x = torch.randn(2, 4)
    out = blas_matmul(x, w)
    assert out.grad_fn is not None, "a product to differentiate stays in autograd"
    out.sum().backward()
    torch.testing.assert_close(w.grad, x.sum(0)[:, None].expand(4, 6))
    with torch.no_grad():
        assert blas_matmul(x, w).grad_fn is None  # no gradient wanted: numpy's BLAS reads the parameter
    half = blas_matmul(x.bfloat16(), w.detach().bfloat16())
    assert half.dtype == torch.bfloat16
    with pytest.raises(RuntimeError):
        blas_matmul(x, w.detach().double())  # mixed dtypes: torch's own error, as for a @ b
