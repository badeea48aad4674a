"""A word-level tokenizer over a fixed vocabulary, for captions and prompts.

Ids: ``PAD = 0``, ``BOS = 1``, ``EOS = 2``, then the words in sorted order. A text is
lower-cased, split on white space and each piece stripped of leading and trailing
punctuation (``"A thick 3, on the left."`` -> ``a thick 3 on the left``; a hyphen
inside a word stays: ``t-shirt``). ``encode`` gives ``[BOS, w1 .. wn, EOS, PAD ..]``
of exactly ``max_len`` ids and a mask that is True on the real tokens (BOS and EOS
included), so ``mask == (ids != PAD)``.

:func:`genlab.data.captions.caption_tokenizer` is the tokenizer of the caption vocabulary of
:mod:`genlab.data.captions` (every word a template, an attribute phrase or a class
name can produce).
"""

from __future__ import annotations

import string
from collections.abc import Iterable

import torch

from genlab.errors import ConfigError

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")  # the tokens of ids PAD, BOS, EOS
_SHOWN = 20  # how many known words an unknown-word message lists


def split_words(text: str) -> list[str]:
    """The words of ``text``: lower-cased, split on white space, outer punctuation stripped."""
    words = (piece.strip(string.punctuation) for piece in text.lower().split())
    return [w for w in words if w]


class Tokenizer:
    """Word-level tokenizer: ``vocab[id]`` is the token of ``id`` (specials first, then sorted words)."""

    def __init__(self, words: Iterable[str]):
        found: set[str] = set()
        for w in words:
            found.update(split_words(w))  # "ankle boot" gives two words
        clash = found & set(SPECIALS)
        if clash:
            raise ValueError(f"the words may not include the special tokens {sorted(clash)}")
        self.vocab: tuple[str, ...] = SPECIALS + tuple(sorted(found))
        self._ids = {w: i for i, w in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    def _known(self) -> str:
        words = self.vocab[len(SPECIALS):]
        more = len(words) - _SHOWN
        return ", ".join(words[:_SHOWN]) + (f" and {more} more" if more > 0 else "")

    def encode(self, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``texts`` -> ids int64 ``[B, max_len]`` and mask bool ``[B, max_len]`` (True on BOS, words, EOS).

        Raises :class:`ConfigError` for a word outside the vocabulary or a text of more than
        ``max_len - 2`` words.
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not one string")
        if max_len < 2:
            raise ValueError(f"max_len must be at least 2 (BOS and EOS), got {max_len}")
        ids = torch.full((len(texts), max_len), PAD, dtype=torch.int64)
        for b, text in enumerate(texts):
            words = split_words(text)
            if len(words) > max_len - 2:
                raise ConfigError(f"the prompt {text!r} has {len(words)} words but at most {max_len - 2} fit in "
                                  f"{max_len} tokens (with BOS and EOS); shorten it.")
            row = [BOS]
            for w in words:
                i = self._ids.get(w)
                if i is None or i < len(SPECIALS):
                    raise ConfigError(f"unknown word {w!r} in the prompt {text!r}; the known words are: "
                                      f"{self._known()}.")
                row.append(i)
            row.append(EOS)
            ids[b, :len(row)] = torch.tensor(row)
        return ids, ids != PAD

    def decode(self, ids: torch.Tensor) -> list[str]:
        """ids ``[B, L]`` (or one sequence ``[L]``) -> texts: the words after BOS, up to EOS or PAD, space-joined."""
        rows = ids.reshape(1, -1) if ids.ndim == 1 else ids
        texts = []
        for row in rows.tolist():
            words = []
            for i in row:
                if not 0 <= i < len(self.vocab):
                    raise ValueError(f"id {i} is outside the vocabulary of {len(self.vocab)} tokens")
                if i in (EOS, PAD):
                    break
                if i != BOS:
                    words.append(self.vocab[i])
            texts.append(" ".join(words))
        return texts
