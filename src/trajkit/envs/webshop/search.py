"""BM25 search over product text, in-process, standing in for the original's Lucene index.

The original searches with pyserini (Lucene BM25, k1=0.9, b=0.4, English analyzer), which needs
Java and an index built by a separate script. Here the same scoring runs in Python over an
inverted index kept in numpy arrays (built in about 5 s per 10k products, and cached on disk so
that later processes memory-map it), so the env needs no Java and no prebuilt index. Known
differences from Lucene: tokens split on anything but letters and digits (inner apostrophes and
decimal points kept), stemming only strips plurals (Lucene's analyzer uses Porter), and document
lengths are exact (Lucene rounds them). Ties rank the earlier product first, as Lucene ranks the
lower document id first.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from array import array
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

K1 = 0.9
B = 0.4
# Lucene's English stop words.
STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with".split()
)
_TOKEN = re.compile(r"[a-z0-9]+(?:['.][a-z0-9]+)*")
_MAX_TF = 65535  # term counts are stored in 16 bits
_CHUNK = 50_000  # documents per build step, bounding the build's peak memory
INDEX_FORMAT = 1  # bump when the analyzer or the stored arrays change


def _stem(token: str) -> str:
    """Plural stripping: batteries -> battery, boxes -> boxe, shoes -> shoe, glass stays."""
    if len(token) < 3 or token[-1] != "s" or not token.isalpha():
        return token
    if token.endswith("ies") and not token.endswith(("eies", "aies")):
        return token[:-3] + "y"
    if token.endswith("es") and not token.endswith(("aes", "ees", "oes")):
        return token[:-1]
    if token.endswith(("us", "ss")):
        return token
    return token[:-1]


def _term(token: str) -> str | None:
    """The index term of a token, or None for a stop word."""
    if token.endswith("'s"):
        token = token[:-2]  # possessive
    if not token or token in STOPWORDS:
        return None
    return _stem(token)


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace("\u2019", "'"))


def analyze(text: str) -> list[str]:
    return [t for t in map(_term, _tokens(text)) if t is not None]


class _TermIds(dict):
    """token -> term id (-1 for a stop word), each distinct token analysed once."""

    def __init__(self, vocab: dict[str, int]) -> None:
        super().__init__()
        self.vocab = vocab

    def __missing__(self, token: str) -> int:
        term = _term(token)
        if term is None:
            tid = -1
        else:
            tid = self.vocab.get(term)
            if tid is None:
                tid = self.vocab[term] = len(self.vocab)
        self[token] = tid
        return tid


class BM25Index:
    """An inverted index; `search(query, k)` returns document positions, best first.

    Postings are stored term by term: `docs[offsets[t]:offsets[t + 1]]` are the documents holding
    term t (ascending) and `tfs[...]` its counts in them.
    """

    def __init__(self, vocab: dict[str, int], docs, tfs, offsets, norm, k1: float = K1, b: float = B):
        self.vocab, self.docs, self.tfs, self.offsets, self.norm = vocab, docs, tfs, offsets, norm
        self.k1, self.b = k1, b
        self.n_docs = len(norm)

    @classmethod
    def build(cls, texts: Iterable[str], k1: float = K1, b: float = B) -> BM25Index:
        import numpy as np

        vocab: dict[str, int] = {}
        ids = _TermIds(vocab)  # dropped after the build: the full catalogue has millions of tokens
        pair_chunks, length_chunks = [], []
        flat, counts, first = array("i"), array("I"), 0

        def flush() -> None:
            nonlocal flat, counts, first
            if not counts:
                return
            terms = np.frombuffer(flat, dtype=np.int32).astype(np.int64)
            doc_of = np.repeat(
                np.arange(first, first + len(counts), dtype=np.int64), np.frombuffer(counts, np.uint32)
            )
            keep = terms >= 0
            terms, doc_of = terms[keep], doc_of[keep]
            length_chunks.append(np.bincount(doc_of - first, minlength=len(counts)))
            # (term, doc) pairs with their counts; the key sorts by term, then by document.
            keys, tf = np.unique(terms * (1 << 32) + doc_of, return_counts=True)
            pair_chunks.append(
                (
                    (keys >> 32).astype(np.int32),
                    (keys & 0xFFFFFFFF).astype(np.uint32),
                    np.minimum(tf, _MAX_TF).astype(np.uint16),
                )
            )
            first += len(counts)
            flat, counts = array("i"), array("I")

        for text in texts:
            before = len(flat)
            flat.extend(map(ids.__getitem__, _tokens(text)))
            counts.append(len(flat) - before)
            if len(counts) >= _CHUNK:
                flush()
        flush()
        del ids
        if pair_chunks:
            term = np.concatenate([c[0] for c in pair_chunks])
            doc = np.concatenate([c[1] for c in pair_chunks])
            tf = np.concatenate([c[2] for c in pair_chunks])
            order = np.argsort(term, kind="stable")  # chunks are in document order already
            term, doc, tf = term[order], doc[order], tf[order]
            lengths = np.concatenate(length_chunks)
        else:
            term, doc, tf, lengths = (
                np.zeros(0, np.int64),
                np.zeros(0, np.uint32),
                np.zeros(0, np.uint16),
                np.zeros(0),
            )
        offsets = np.searchsorted(term, np.arange(len(vocab) + 1)).astype(np.int64)
        avg = float(lengths.mean()) if len(lengths) else 1.0
        norm = k1 * (1 - b + b * lengths / max(avg, 1e-9))
        return cls(vocab, doc, tf, offsets, norm.astype(np.float64), k1, b)

    def idf(self, term: str) -> float:
        tid = self.vocab.get(term)
        df = 0 if tid is None else int(self.offsets[tid + 1] - self.offsets[tid])
        return math.log(1 + (self.n_docs - df + 0.5) / (df + 0.5))

    def search(self, query: str, k: int = 50) -> list[int]:
        import numpy as np

        scores = np.zeros(self.n_docs)
        for term, count in Counter(analyze(query)).items():
            tid = self.vocab.get(term)
            if tid is None:
                continue
            lo, hi = int(self.offsets[tid]), int(self.offsets[tid + 1])
            docs = np.asarray(self.docs[lo:hi], dtype=np.int64)
            tf = np.asarray(self.tfs[lo:hi], dtype=np.float64)
            scores[docs] += self.idf(term) * count * (self.k1 + 1) * tf / (tf + self.norm[docs])
        hits = np.flatnonzero(scores)
        if len(hits) > k:
            # Keep every document scoring at least the k-th best, so ties are broken by position.
            kth = np.partition(scores[hits], len(hits) - k)[len(hits) - k]
            hits = hits[scores[hits] >= kth]
        order = np.lexsort((hits, -scores[hits]))
        return [int(i) for i in hits[order[:k]]]

    # ---- on-disk cache -------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """Write the index to `folder` (atomically: a half-written index is never read)."""
        import numpy as np

        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
        for name in ("docs", "tfs", "offsets", "norm"):
            np.save(work / f"{name}.npy", np.asarray(getattr(self, name)))
        terms = sorted(self.vocab, key=self.vocab.__getitem__)
        (work / "vocab.json").write_text(json.dumps({"k1": self.k1, "b": self.b, "terms": terms}))
        try:
            os.replace(work, folder)
        except OSError:  # another process saved it first
            shutil.rmtree(work, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path) -> BM25Index:
        import numpy as np

        meta = json.loads((folder / "vocab.json").read_text())
        arrays = {
            name: np.load(folder / f"{name}.npy", mmap_mode="r")
            for name in ("docs", "tfs", "offsets", "norm")
        }
        vocab = {term: i for i, term in enumerate(meta["terms"])}
        return cls(vocab, **arrays, k1=meta["k1"], b=meta["b"])
