"""MS MARCO / TREC loaders on tiny files, Wikipedia passage splitting, the embedded pairs, bad input."""

import json

import numpy as np
import pytest

from hedonic_neurons.ir.data import derived_relevance, read_jsonl, require_file, strip_wiki, wiki_passages
from hedonic_neurons.ir.embedded import query_passage_pairs
from hedonic_neurons.ir.msmarco import (
    read_collection,
    read_qrels,
    read_queries,
    read_run,
    read_top1000,
    read_triples,
)


def test_msmarco_and_trec_formats(tmp_path):
    (tmp_path / "collection.tsv").write_text("0\tThe cat sat.\n1\tDogs bark\tloudly.\n")
    assert read_collection(tmp_path / "collection.tsv") == {"0": "The cat sat.", "1": "Dogs bark\tloudly."}
    (tmp_path / "q.tsv").write_text("156493\tdo goldfish grow\r\n2\t Androgen receptor define\n")
    assert read_queries(tmp_path / "q.tsv") == {"156493": "do goldfish grow", "2": "Androgen receptor define"}
    (tmp_path / "qrels.txt").write_text("19335 Q0 1017759 0\n19335 Q0 1082489 3\n23849 0 1020327 2\n")
    want = {"19335": {"1017759": 0, "1082489": 3}, "23849": {"1020327": 2}}
    assert read_qrels(tmp_path / "qrels.txt") == want
    (tmp_path / "triples.tsv").write_text("q1\tpos text\tneg text\n")
    assert read_triples(tmp_path / "triples.tsv") == [("q1", "pos text", "neg text")]
    (tmp_path / "run.trec").write_text("1 Q0 d9 2 1.5 bm25\n1 Q0 d3 1 2.5 bm25\n2 Q0 d1 1 9 bm25\n")
    assert read_run(tmp_path / "run.trec") == {"1": ["d3", "d9"], "2": ["d1"]}
    (tmp_path / "top1000.tsv").write_text("7\t11\tq seven\tpassage a\n7\t12\tq seven\tpassage b\n")
    assert read_run(tmp_path / "top1000.tsv") == {"7": ["11", "12"]}
    queries, passages, run = read_top1000(tmp_path / "top1000.tsv")
    assert queries == {"7": "q seven"} and passages == {"11": "passage a", "12": "passage b"}


def test_bad_files_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetch ir"):
        read_qrels(tmp_path / "nope.txt")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(ValueError, match="empty.*fetch ir"):
        read_queries(tmp_path / "empty.tsv")
    (tmp_path / "bad.txt").write_text("1 Q0 d1\n")
    with pytest.raises(ValueError, match="bad.txt:1: expected"):
        read_qrels(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError, match="missing"):
        require_file(tmp_path / "x")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="no rows"):
        read_jsonl(tmp_path / "blank.jsonl")


XML = b"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/"><page><title>Cat</title><ns>0</ns>
<id>7</id><revision><text>{{Infobox|a={{b}}}}'''Cats''' are [[small mammal|small]] [[animal]]s.
&lt;ref&gt;x&lt;/ref&gt;
== History ==
[[File:Cat.jpg|thumb|A [[cat]]]] """ + b"word " * 230 + b"""[[Category:Felines]]</text></revision></page>
<page><title>Redir</title><ns>0</ns><id>8</id><redirect title="Cat"/><revision><text>#REDIRECT [[Cat]]</text>
</revision></page><page><title>Talk:Cat</title><ns>1</ns><id>9</id><revision><text>hello</text></revision></page>
</mediawiki>"""


def test_wiki_markup_and_passages():
    assert strip_wiki("{{a|{{b}}}}'''Cats''' are [[small mammal|small]] [[animal]]s.<ref>x</ref>") == \
        "Cats are small animals."
    ps = wiki_passages(XML, words=100)
    assert {p["article_id"] for p in ps} == {"7"}  # redirect and talk pages dropped
    assert len(ps) == 2 and ps[0]["pid"] == "7-0" and ps[0]["title"] == "Cat"
    assert ps[0]["text"].startswith("Cats are small animals. History. word word")
    assert "Category" not in " ".join(p["text"] for p in ps) and "thumb" not in ps[0]["text"]
    assert all(100 <= len(p["text"].split()) <= 140 for p in ps)


def test_derived_relevance_rule():
    rel = derived_relevance(["a", "a", "b", "a", "c"], np.array([1.0, 0.2, 0.5, 0.0, 0.4]))
    assert rel.tolist() == [2, 1, 1, 1, 0]


def _tiny_pool(root, n_queries=3, k=12):
    ir = root / "ir"
    ir.mkdir(parents=True)
    with open(ir / "wiki_passages.jsonl", "w") as fh:
        for j in range(k):
            row = {"pid": f"1-{j}", "article_id": "1", "title": "T", "text": f"passage {j}"}
            fh.write(json.dumps(row) + "\n")
    for split in ("train", "ood"):
        with open(ir / f"candidates.{split}.jsonl", "w") as fh:
            for q in range(n_queries):
                row = {"qid": f"{split}{q}", "query": f"query {q}", "pids": [f"1-{j}" for j in range(k)],
                       "bm25": list(range(k, 0, -1)), "rel": [2] + [0] * (k - 1)}
                fh.write(json.dumps(row) + "\n")
    return root


def test_query_passage_pairs(tmp_path):
    root = _tiny_pool(tmp_path)
    ps = query_passage_pairs(20, "ood", seed=1, data_dir=root)
    assert len(ps) == 20 and ps.relevance == "derived" and ps.split == "ood"
    assert ps.rank[:10].tolist() == list(range(1, 11)) and ps.rel[0] == 2
    assert ps.texts()[0] == f"query: {ps.queries[0]} passage: passage 0"
    again = query_passage_pairs(20, "ood", seed=1, data_dir=root)
    assert again.qids == ps.qids
    assert len(query_passage_pairs(1000, "train", data_dir=root)) == 30  # the split runs out
    with pytest.raises(ValueError, match="'train'"):
        query_passage_pairs(10, "dev", data_dir=root)
    with pytest.raises(FileNotFoundError, match="fetch ir"):
        query_passage_pairs(10, "train", data_dir=tmp_path / "nothing")
