"""The one tokenizer used everywhere in the IR code (BM25 index, features, task labels).

Rule: lower-case, split on anything that is not an ASCII letter or digit. Documents are never
stopword-filtered (their length L counts every token); query terms drop English stopwords, unless the
query is made only of stopwords, in which case all its terms are kept. The same rule feeds the BM25
index (bm25s), the MSLR features and the CQTR / mean-TF/L labels, so they agree exactly.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"[a-z0-9]+")

# A compact English stopword list (the Lucene/Anserini default set plus common question words), so
# "what is the ..." queries are judged on their content terms.
STOPWORDS: frozenset[str] = frozenset(
    """a an and are as at be but by for if in into is it no not of on or such that the their then there
    these they this to was will with what which who whom whose when where why how do does did i you he
    she we me my your our its his her them from has have had been were am can could would should may
    might must shall s t""".split()
)


def tokenize(text: str, drop_stopwords: bool = False) -> list[str]:
    """Lower-case alphanumeric tokens of `text`; with `drop_stopwords` the STOPWORDS are removed."""
    tokens = _TOKEN.findall(text.lower())
    if drop_stopwords:
        tokens = [t for t in tokens if t not in STOPWORDS]
    return tokens


def query_terms(query: str) -> list[str]:
    """The query's terms as every IR feature sees them: stopwords dropped unless nothing would remain."""
    terms = tokenize(query, drop_stopwords=True)
    return terms if terms else tokenize(query)


def unique_query_terms(query: str) -> list[str]:
    """Distinct query terms in first-seen order (CQTR and the TF statistics count each term once)."""
    return list(dict.fromkeys(query_terms(query)))
