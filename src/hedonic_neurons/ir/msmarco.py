"""Loaders for the real MS MARCO passage files and TREC DL topics / qrels / run files.

Formats (as distributed by Microsoft and TREC / Anserini):
- collection.tsv: ``pid \\t passage``;  queries.*.tsv and TREC topics: ``qid \\t query``
- qrels: ``qid <iter> docid rel`` (TREC, spaces or tabs; MS MARCO's qrels.*.tsv uses the same 4 columns)
- triples.train.small.tsv: ``query \\t positive passage \\t negative passage``  (text triples), or the
  id form ``qid \\t pos_pid \\t neg_pid``
- top1000.*.tsv: ``qid \\t pid \\t query \\t passage``;  TREC run files: ``qid Q0 docid rank score tag``
Every loader raises a one-line FileNotFoundError / ValueError naming the file and the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from hedonic_neurons.ir.data import require_file


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
    path = require_file(path)
    with open(path, encoding="utf-8") as fh:
        for no, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield no, line


def _bad(path, no: int, what: str) -> ValueError:
    return ValueError(f"{path}:{no}: expected {what}; check the file is the MS MARCO / TREC format")


def _read_id_text(path: str | Path, what: str, strip_text: bool) -> dict[str, str]:
    """id -> text from a two-column TSV ('id<TAB>text'); `what` names the columns in errors."""
    out = {}
    for no, line in _lines(path):
        parts = line.split("\t", 1)
        if len(parts) != 2:
            raise _bad(path, no, what)
        out[parts[0].strip()] = parts[1].strip() if strip_text else parts[1]
    return out


def read_collection(path: str | Path) -> dict[str, str]:
    """pid -> passage text from collection.tsv."""
    return _read_id_text(path, "'pid<TAB>passage'", strip_text=False)


def read_queries(path: str | Path) -> dict[str, str]:
    """qid -> query text from queries.*.tsv or a TREC topics file (qid<TAB>query)."""
    return _read_id_text(path, "'qid<TAB>query'", strip_text=True)


read_topics = read_queries


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """qid -> {docid: graded relevance} from a TREC / MS MARCO qrels file."""
    out: dict[str, dict[str, int]] = {}
    for no, line in _lines(path):
        parts = line.split()
        if len(parts) != 4:
            raise _bad(path, no, "'qid iter docid rel' (4 columns)")
        try:
            rel = int(parts[3])
        except ValueError:
            raise _bad(path, no, "an integer relevance grade in column 4") from None
        out.setdefault(parts[0], {})[parts[2]] = rel
    return out


def read_triples(path: str | Path) -> list[tuple[str, str, str]]:
    """(query, positive, negative) rows of a triples file (texts or ids, as written)."""
    out = []
    for no, line in _lines(path):
        parts = line.split("\t")
        if len(parts) != 3:
            raise _bad(path, no, "'query<TAB>positive<TAB>negative'")
        out.append((parts[0], parts[1], parts[2]))
    return out


def read_run(path: str | Path) -> dict[str, list[str]]:
    """qid -> docids in rank order, from a TREC run file or an MS MARCO top1000 file.

    top1000 rows (qid pid query passage) keep their file order; TREC rows are sorted by rank.
    """
    ranked: dict[str, list[tuple[float, int, str]]] = {}
    for no, line in _lines(path):
        tab = line.split("\t")
        if len(tab) == 4:  # top1000: qid pid query passage
            ranked.setdefault(tab[0].strip(), []).append((float(no), no, tab[1].strip()))
            continue
        parts = line.split()
        if len(parts) == 6:  # TREC: qid Q0 docid rank score tag
            try:
                rank = float(parts[3])
            except ValueError:
                raise _bad(path, no, "an integer rank in column 4") from None
            ranked.setdefault(parts[0], []).append((rank, no, parts[2]))
        elif len(parts) == 3:  # MS MARCO run: qid pid rank
            ranked.setdefault(parts[0], []).append((float(parts[2]), no, parts[1]))
        else:
            raise _bad(path, no, "a TREC run row 'qid Q0 docid rank score tag' or top1000 row")
    return {q: [d for _, _, d in sorted(rows)] for q, rows in ranked.items()}


def read_top1000(path: str | Path) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]]]:
    """(queries, passages, run) from an MS MARCO top1000 file (qid pid query passage)."""
    queries, passages, run = {}, {}, {}
    for no, line in _lines(path):
        parts = line.split("\t")
        if len(parts) != 4:
            raise _bad(path, no, "'qid<TAB>pid<TAB>query<TAB>passage'")
        q, p = parts[0].strip(), parts[1].strip()
        queries[q] = parts[2]
        passages[p] = parts[3]
        run.setdefault(q, []).append(p)
    return queries, passages, run
