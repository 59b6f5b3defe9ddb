"""A real CLIP BPE tokenizer, built offline from the vocabulary that ships inside open_clip_torch.

The hub is not always reachable (CI, air-gapped clusters), but `open_clip_torch` carries the 49,408-token CLIP BPE
file. Written out as `vocab.json` + `merges.txt`, it loads as a transformers `CLIPTokenizer`, the same class that
Stable Diffusion pipelines use, so the tiny models tokenise text exactly as the real ones do.
"""

from __future__ import annotations

import gzip
import inspect
import json
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

START, END = "<|startoftext|>", "<|endoftext|>"
# The BPE file's first line is a header; CLIP keeps 49152 − 256 − 2 merges after it.
NUM_MERGES = 49152 - 256 - 2


def _bpe_path() -> Path:
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"open_clip_torch no longer ships its BPE vocabulary at {path}")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte → printable-unicode table (GPT-2's), so every byte has a BPE symbol."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """The CLIP vocabulary (token → id) and merge list, in CLIP's own order."""
    with gzip.open(_bpe_path(), "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : NUM_MERGES + 1]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += [START, END]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def write_clip_tokenizer(directory: str | Path, model_max_length: int = 77, pad_token: str = END) -> Path:
    """Write a loadable CLIPTokenizer (vocab.json, merges.txt, configs) into `directory`.

    SD1.5 pads with `<|endoftext|>`; SD2 and SDXL's second tokenizer pad with `!` (id 0), as their hub copies do.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    specials = {"bos_token": START, "eos_token": END, "unk_token": END, "pad_token": pad_token}
    if "vocab_file" in inspect.signature(CLIPTokenizer.__init__).parameters:  # transformers 4.x
        tok = CLIPTokenizer(
            vocab_file=str(directory / "vocab.json"), merges_file=str(directory / "merges.txt"), **specials
        )
    else:  # transformers 5.x: the tokenizers-backed class takes the vocabulary and merges directly
        tok = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges], **specials)
    tok.model_max_length = model_max_length
    tok.save_pretrained(directory)
    return directory
