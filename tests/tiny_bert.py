"""A tiny random BERT written to a local directory, so that transformer tests run offline.

The vocabulary holds the word pieces of the test sentences (whole words and a few ``##``
pieces, so that some words split), and a few CJK characters; characters that are missing
(other CJK characters, emoji) become ``[UNK]``. The weights are random: the tests train
the pipeline, they do not rely on pretrained knowledge.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Lowercased whole words of the English test sentences; the tokenizer lowercases.
WORDS = """
who is shaka khan ? i like london and berlin . apple bought a small startup in paris
angela merkel visited new york city last may the weather was nice , she works for google
mr smith went to tokyo on monday with maria from ibm
""".split()

# Word pieces, so that some words become several pieces ("berlin" is also whole).
PIECES = ["ber", "##lin", "lon", "##don", "sha", "##ka", "mer", "##kel", "##s", "##ing"]

# A few CJK characters of the Chinese test sentences; the others map to [UNK].
CJK = list("我在北京工作他去上海了张三李四是中国人天气很好")

VOCAB = [*SPECIAL_TOKENS, *dict.fromkeys(WORDS), *PIECES, *CJK, *"abcdefghijklmnopqrstuvwxyz"]
VOCAB += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
VOCAB = list(dict.fromkeys(VOCAB))


def write_tiny_bert(path: Path, *, num_hidden_layers: int = 2, seed: int = 0) -> Path:
    """Write a random 2-layer BERT (hidden size 32) and its fast tokenizer to ``path``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n", encoding="utf8")
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(str(path))
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(str(path))
    return path
