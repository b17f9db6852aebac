"""IR data on disk: where it lives, checks that name the fix, and `fetch_ir` which builds the embedded pool.

The embedded default (everything from Python wheels, no network service), built once under
``$HEDONIC_NEURONS_DATA/ir`` by ``hedonic-neurons fetch ir``:

- real queries and judgments from the ``pyserini==0.21.0`` wheel (read from the Anserini fat jar inside
  it, no Java): MS MARCO passage dev subset (train side), TREC DL-19 and DL-20 passage topics + qrels;
- real English passages: gensim's shortened Wikipedia test dump, markup stripped, split into passages of
  ~100 words with their article id and title;
- per query, the BM25 (bm25s, our `text.tokenize`) top candidates from that Wikipedia pool, with a
  DERIVED graded relevance (see `derived_relevance`): the TREC/MS MARCO judgments are for MS MARCO
  passages, which cannot be had here, so relevance on this pool is derived and labelled so.

The wheels are cached under ``$XDG_CACHE_HOME/hedonic-neurons/wheels`` (not in data/); data/ir/ holds
only compact TSV/JSONL files and a manifest. Re-running is a no-op once the manifest is there.
"""

from __future__ import annotations

import bz2
import contextlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

log = logging.getLogger(__name__)

FETCH_HINT = "run `hedonic-neurons fetch ir` (or `make data-ir`) to build it"
BUILD_VERSION = 1
PYSERINI = "pyserini==0.21.0"
GENSIM = "gensim"
JAR = "pyserini/resources/jars/anserini-0.21.0-fatjar.jar"
WIKI = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
TOPIC_FILES = {  # name in the jar's topics-and-qrels/ -> name under data/ir/
    "topics.msmarco-passage.dev-subset.txt": "topics.msmarco-passage.dev-subset.tsv",
    "qrels.msmarco-passage.dev-subset.txt": "qrels.msmarco-passage.dev-subset.txt",
    "topics.dl19-passage.txt": "topics.dl19-passage.tsv",
    "qrels.dl19-passage.txt": "qrels.dl19-passage.txt",
    "topics.dl20.txt": "topics.dl20.tsv",
    "qrels.dl20-passage.txt": "qrels.dl20-passage.txt",
}
N_CANDIDATES = 20  # BM25 candidates kept per query
PASSAGE_WORDS = 100


def data_root() -> Path:
    """The data folder: $HEDONIC_NEURONS_DATA, else ./data."""
    return Path(os.environ.get("HEDONIC_NEURONS_DATA", "data"))


def ir_dir(data_dir: str | Path | None = None) -> Path:
    return Path(data_dir if data_dir is not None else data_root()) / "ir"


def require_file(path: str | Path, hint: str = "") -> Path:
    """The path if it exists and is non-empty, else a one-line error naming the fix."""
    path = Path(path)
    fix = hint or "check the path (embedded data: " + FETCH_HINT + ")"
    if not path.is_file():
        raise FileNotFoundError(f"IR data file {path} is missing; {fix}")
    if path.stat().st_size == 0:
        raise ValueError(f"IR data file {path} is empty; {fix}")
    return path


def read_jsonl(path: str | Path, hint: str = FETCH_HINT) -> list[dict]:
    path = require_file(path, hint)
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    if not rows:
        raise ValueError(f"IR data file {path} holds no rows; {hint}")
    return rows


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    _write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# --- wheels --------------------------------------------------------------------------------------
def wheel_cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "hedonic-neurons" / "wheels"


def _wheel(spec: str, prefix: str) -> Path:
    """A cached wheel for `spec`, downloaded with `pip download --no-deps` the first time."""
    cache = wheel_cache()
    cache.mkdir(parents=True, exist_ok=True)
    version = spec.split("==")[1] if "==" in spec else ""
    found = sorted(cache.glob(f"{prefix}-{version}*.whl"))
    if found:
        return found[-1]
    log.info("downloading %s (pip download --no-deps) into %s", spec, cache)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", spec,
           "-d", str(cache)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(cache.glob(f"{prefix}-{version}*.whl"))
    if res.returncode != 0 or not found:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"could not download {spec} from PyPI ({last}); check the network / pip index")
    return found[-1]


@contextlib.contextmanager
def _cached_wheel(path: Path):
    """The wheel opened as a zip; a truncated one (an interrupted download) is deleted with a one-line error."""
    try:
        with zipfile.ZipFile(path) as whl:
            yield whl
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        path.unlink(missing_ok=True)
        raise RuntimeError(f"cached wheel {path} is truncated or corrupt ({exc}; an interrupted download?): it was "
                           "deleted; re-run `hedonic-neurons fetch ir` to download it again") from exc


# --- Wikipedia -----------------------------------------------------------------------------------
_REF = re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", re.S | re.I)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|.*?\|\}", re.S)
_FILE = re.compile(r"\[\[(?:File|Image|Category|Media):[^\[\]]*(?:\[\[[^\[\]]*\]\][^\[\]]*)*\]\]", re.I)
_INTERWIKI = re.compile(r"\[\[[a-z\-]{2,12}:[^\]]*\]\]")
_LINK = re.compile(r"\[\[(?:[^\[\]|]*\|)?([^\[\]]*)\]\]")
_EXT = re.compile(r"\[https?://[^\s\]]+\s*([^\]]*)\]")
_TAG = re.compile(r"<[^>]+>")
_HEADING = re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M)
_QUOTES = re.compile(r"'{2,}")


def strip_wiki(text: str) -> str:
    """Plain text from MediaWiki markup (templates, tables, refs, files, categories dropped; links kept)."""
    text = _COMMENT.sub(" ", text)
    text = _REF.sub(" ", text)
    for _ in range(10):  # templates nest; peel the innermost until none is left
        new = _TEMPLATE.sub(" ", text)
        if new == text:
            break
        text = new
    text = _TABLE.sub(" ", text)
    for _ in range(3):
        text = _FILE.sub(" ", text)
    text = _INTERWIKI.sub(" ", text)
    text = _LINK.sub(r"\1", text)
    text = _EXT.sub(r"\1", text)
    text = _TAG.sub(" ", text)
    text = _HEADING.sub(r"\1.", text)
    text = _QUOTES.sub("", text)
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith(("*", "#", "|", "!", "{", "}", ":"))
             or len(ln.split()) > 8]
    text = " ".join(" ".join(lines).replace("&nbsp;", " ").split())
    return re.sub(r"[*#]+ ", " ", text)


def wiki_passages(xml_bytes: bytes, words: int = PASSAGE_WORDS) -> list[dict]:
    """~`words`-word passages of every main-namespace, non-redirect article in a MediaWiki XML dump."""
    out: list[dict] = []
    for _, el in ElementTree.iterparse(io.BytesIO(xml_bytes)):
        if not el.tag.endswith("}page"):
            continue
        ns = el.find("{*}ns")
        title = el.findtext("{*}title") or ""
        aid = el.findtext("{*}id") or ""
        text = el.findtext("{*}revision/{*}text") or ""
        el.clear()
        if (ns is not None and ns.text != "0") or el.find("{*}redirect") is not None \
                or text.lstrip().upper().startswith("#REDIRECT"):
            continue
        toks = strip_wiki(text).split()
        # Equal-sized chunks of ~`words` words; a short tail is folded into the previous chunk.
        n_chunks = max(1, round(len(toks) / words))
        bounds = np.linspace(0, len(toks), n_chunks + 1).round().astype(int)
        for c in range(n_chunks):
            chunk = " ".join(toks[bounds[c]:bounds[c + 1]])
            if len(chunk.split()) >= 20:
                out.append({"pid": f"{aid}-{c}", "article_id": aid, "title": title, "text": chunk})
    return out


# --- derived relevance ---------------------------------------------------------------------------
def derived_relevance(cand_articles: list[str], cand_cqtr: np.ndarray) -> np.ndarray:
    """Graded relevance DERIVED from BM25 rank and article identity (no human judgment on this pool).

    The article of the BM25 rank-1 passage is the query's "answer article". Grade 2: a passage of that
    article covering at least half the query terms; grade 1: a passage of that article, or one from
    elsewhere covering at least half the query terms; grade 0: the rest. Candidates are in BM25 order.
    """
    answer = cand_articles[0]
    same = np.array([a == answer for a in cand_articles])
    half = np.asarray(cand_cqtr) >= 0.5
    return np.where(same & half, 2, np.where(same | half, 1, 0)).astype(np.int64)


# --- the build -----------------------------------------------------------------------------------
def _bm25_candidates(passages: list[dict], topics: dict[str, str], source: str, k: int) -> list[dict]:
    import bm25s

    from hedonic_neurons.ir.features import task_targets
    from hedonic_neurons.ir.text import query_terms, tokenize

    texts = [p["text"] for p in passages]
    retriever = bm25s.BM25()  # lucene idf, k1 = 1.5, b = 0.75: the same as features.IRFeatures
    retriever.index([tokenize(t) for t in texts], show_progress=False)
    qids = list(topics)
    qtoks = [query_terms(topics[q]) for q in qids]
    keep = [i for i, t in enumerate(qtoks) if t]
    docs, scores = retriever.retrieve([qtoks[i] for i in keep], k=k, show_progress=False, n_threads=1)
    rows = []
    for r, i in enumerate(keep):
        pos = scores[r] > 0
        if pos.sum() < min(10, k):  # too few passages share a term with the query: no ranking to learn
            continue
        idx = docs[r][pos]
        q = topics[qids[i]]
        cq = task_targets("cqtr", [q] * len(idx), [texts[j] for j in idx])
        rel = derived_relevance([passages[j]["article_id"] for j in idx], cq)
        rows.append({"qid": qids[i], "query": q, "source": source,
                     "pids": [passages[j]["pid"] for j in idx],
                     "bm25": [round(float(s), 6) for s in scores[r][pos]], "rel": rel.tolist(),
                     "relevance": "derived"})
    return rows


def fetch_ir(data_dir: str | Path | None = None, k: int = N_CANDIDATES) -> Path:
    """Build the embedded IR data under `data_dir`/ir (idempotent; wheels cached) and return that folder."""
    out = ir_dir(data_dir)
    manifest = out / "manifest.json"
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text()).get("version") == BUILD_VERSION:
                return out
        except json.JSONDecodeError:
            pass
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pys = _wheel(PYSERINI, "pyserini")
    with _cached_wheel(pys) as whl, zipfile.ZipFile(io.BytesIO(whl.read(JAR))) as jar:
        for src, dst in TOPIC_FILES.items():
            data = jar.read("topics-and-qrels/" + src).decode("utf-8").replace("\r\n", "\n")
            _write_atomic(out / dst, data)
    gen = _wheel(GENSIM, "gensim")
    with _cached_wheel(gen) as whl:
        xml = bz2.decompress(whl.read(WIKI))
    passages = wiki_passages(xml)
    _write_jsonl(out / "wiki_passages.jsonl", passages)

    from hedonic_neurons.ir.msmarco import read_qrels, read_topics

    train_topics = read_topics(out / TOPIC_FILES["topics.msmarco-passage.dev-subset.txt"])
    ood_topics: dict[str, str] = {}
    for topics, qrels, name in [("topics.dl19-passage.txt", "qrels.dl19-passage.txt", "dl19"),
                                ("topics.dl20.txt", "qrels.dl20-passage.txt", "dl20")]:
        judged = read_qrels(out / TOPIC_FILES[qrels])
        for q, text in read_topics(out / TOPIC_FILES[topics]).items():
            if q in judged:  # the official evaluation queries: those with judgments
                ood_topics[f"{name}:{q}"] = text
    train = _bm25_candidates(passages, train_topics, "msmarco-dev-subset", k)
    ood = _bm25_candidates(passages, ood_topics, "trec-dl19+dl20", k)
    _write_jsonl(out / "candidates.train.jsonl", train)
    _write_jsonl(out / "candidates.ood.jsonl", ood)
    info = {
        "version": BUILD_VERSION, "relevance": "derived",
        "sources": {"queries+qrels": f"{PYSERINI} ({JAR})", "passages": f"{gen.name} ({WIKI})"},
        "n_passages": len(passages), "n_articles": len({p["article_id"] for p in passages}),
        "n_train_queries": len(train), "n_ood_queries": len(ood), "candidates_per_query": k,
        "tokenizer": "hedonic_neurons.ir.text (lower-case alnum; query stopwords dropped)",
        "bm25": "bm25s lucene k1=1.5 b=0.75", "seconds": round(time.perf_counter() - t0, 1),
    }
    _write_atomic(manifest, json.dumps(info, indent=1))
    log.info("IR data built in %s: %s", out, info)
    return out
