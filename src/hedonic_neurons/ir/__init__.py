"""Information-retrieval data and signals for the reranker experiment.

- `ir.data`: data folder, one-line missing/empty-file errors, `fetch_ir` (the embedded pool builder)
- `ir.msmarco`: loaders for the real MS MARCO passage files and TREC DL topics / qrels / runs
- `ir.embedded`: `query_passage_pairs(n, split="train"|"ood", seed)` over the embedded pool
- `ir.text`: the one tokenizer; `ir.features`: MSLR features and the CQTR / mean-TF/L labels
- `ir.metrics`: NDCG@k with gain 2^rel - 1
"""
