"""Corpus loading / validation / hashing / tokenization, and the embedded default builders."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mergemix_dagster.core.data.corpora import (
    corpus_fingerprint,
    load_documents,
    read_corpus,
    tokenize_documents,
    validate_documents,
    write_corpus,
)
from mergemix_dagster.core.data.defaults import EMBEDDED_DOMAINS, build_domain_documents, build_general_documents
from mergemix_dagster.core.errors import ConfigError, CorpusError, EmptyCorpusError, MalformedCorpusError

REPO = Path(__file__).resolve().parents[1]
TASK_DATA = REPO / "mergemix_dagster" / "tasks" / "data"


def _items(task: str) -> list[dict]:
    return [json.loads(line) for line in (TASK_DATA / f"{task}.jsonl").read_text().splitlines()]


def _tiny_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")


# ---------------------------------------------------------------- loading
DOCS = ["first document", "second\ndocument with ünïcode", "third"]


def test_load_each_format(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(DOCS)) + "\n\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps({"text": d}) for d in DOCS))
    (tmp_path / "c.json").write_text(json.dumps([{"text": d} for d in DOCS]))
    pd.DataFrame({"text": DOCS, "other": [1, 2, 3]}).to_parquet(tmp_path / "d.parquet")
    (tmp_path / "e.txt").write_text("a whole file is one document\nwith two lines", encoding="utf-8")
    for name in ("a.jsonl", "b.jsonl.gz", "c.json", "d.parquet"):
        assert load_documents([tmp_path / name]) == DOCS, name
    assert load_documents([str(tmp_path / "e.txt")]) == ["a whole file is one document\nwith two lines"]
    # a directory: supported files, sorted by name; other files ignored
    (tmp_path / "README.md").write_text("ignored")
    assert load_documents([tmp_path]) == DOCS * 4 + ["a whole file is one document\nwith two lines"]


def test_custom_text_field(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"content": "x y z"}) + "\n")
    assert load_documents([tmp_path / "a.jsonl"], text_field="content") == ["x y z"]
    with pytest.raises(MalformedCorpusError, match="content"):
        (tmp_path / "b.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
        load_documents([tmp_path / "b.jsonl"], text_field="content")


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"text": "ok"}) + "\n{not json\n")
    with pytest.raises(MalformedCorpusError, match=r"bad\.jsonl:3"):
        load_documents([path])


@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz", "c.txt", "c.json"])
@pytest.mark.parametrize("bad, reason", [(b"\xff", "invalid start byte"), (b"\xc3A", "invalid continuation byte")])
def test_bad_utf8_is_named_at_its_byte_and_line_in_the_file(tmp_path, name, bad, reason):
    """Issue 19: a bad byte 66 KB into a file was reported at byte 1484 (its place in the decoder's chunk).
    The bad byte sits at 65,535, the last byte of the first 64 KiB: ``\xc3A`` is a two-byte character the
    decoder holds back at the boundary, then an invalid continuation."""
    from mergemix_dagster.core.data.corpora import read_documents

    head = "".join(json.dumps({"text": c * 30_000}) + "\n" for c in "ab").encode() + b"\n\n"
    data = head + b" " * (65_535 - len(head)) + bad + b" here\n"
    path = tmp_path / name
    with gzip.open(path, "wb") if name.endswith(".gz") else path.open("wb") as fh:
        fh.write(data)
    expected = f"{path}: not valid UTF-8 ({reason} at byte 65535 (line 5))"
    for read in (load_documents, read_documents):
        with pytest.raises(MalformedCorpusError, match=re.escape(expected)):
            read([str(path)])


def test_missing_field_and_non_string_text(tmp_path):
    (tmp_path / "m.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(MalformedCorpusError, match=r"m\.jsonl:1.*'text'"):
        load_documents([tmp_path / "m.jsonl"])
    (tmp_path / "n.jsonl").write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"text": 5}) + "\n")
    with pytest.raises(MalformedCorpusError, match=r"n\.jsonl:2.*int"):
        load_documents([tmp_path / "n.jsonl"])
    pd.DataFrame({"text": ["a", None]}).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(MalformedCorpusError, match="row 1"):
        load_documents([tmp_path / "p.parquet"])
    pd.DataFrame({"body": ["a"]}).to_parquet(tmp_path / "q.parquet")
    with pytest.raises(MalformedCorpusError, match="text"):
        load_documents([tmp_path / "q.parquet"])
    (tmp_path / "r.json").write_text(json.dumps({"text": "not a list"}))
    with pytest.raises(MalformedCorpusError, match="array"):
        load_documents([tmp_path / "r.json"])


def test_missing_path_and_unsupported_format(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        load_documents([tmp_path / "nope.jsonl"])
    (tmp_path / "x.csv").write_text("text\na\n")
    with pytest.raises(MalformedCorpusError, match="unsupported"):
        load_documents([tmp_path / "x.csv"])


def test_validate_documents(tmp_path):
    assert validate_documents("web", ["a", "  ", "", "b"]) == ["a", "b"]
    with pytest.raises(EmptyCorpusError, match="'web'"):
        validate_documents("web", ["", "   \n\t"])
    with pytest.raises(EmptyCorpusError, match="'code'"):
        validate_documents("code", [])
    with pytest.raises(EmptyCorpusError):
        validate_documents("code", ["a"], min_documents=2)
    # an empty file loads to nothing, which validation then rejects
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(EmptyCorpusError, match="'math'.*empty\\.jsonl"):
        validate_documents("math", load_documents([tmp_path / "empty.jsonl"]), source=str(tmp_path / "empty.jsonl"))


def test_fingerprint_stable_and_sensitive():
    fp = corpus_fingerprint(DOCS)
    assert fp == corpus_fingerprint(list(DOCS)) and len(fp) == 64
    assert fp != corpus_fingerprint(DOCS[::-1])  # order
    assert fp != corpus_fingerprint(DOCS[:-1] + ["third!"])  # content
    assert corpus_fingerprint(["ab", "c"]) != corpus_fingerprint(["a", "bc"])  # boundaries


def test_write_read_roundtrip_is_deterministic(tmp_path):
    write_corpus(DOCS, tmp_path / "a" / "c.jsonl.gz")
    write_corpus(DOCS, tmp_path / "b.jsonl.gz")
    assert read_corpus(tmp_path / "a" / "c.jsonl.gz") == DOCS
    assert (tmp_path / "a" / "c.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    assert load_documents([tmp_path / "b.jsonl.gz"]) == DOCS


def test_tokenize_stream_has_eos_after_every_document():
    docs = build_domain_documents("math", max_chars=5_000) + ["x"]
    tok = _tiny_tokenizer(docs)
    stream = tokenize_documents(docs, tok, batch_size=7)
    assert stream.dtype == np.int32 and stream.ndim == 1
    eos = tok.eos_token_id
    assert int((stream == eos).sum()) == len(docs) and stream[-1] == eos
    pieces = np.split(stream, np.flatnonzero(stream == eos) + 1)[:-1]
    assert [tok.decode(p[:-1]) for p in pieces] == docs
    assert tokenize_documents([], tok).shape == (0,)


# ---------------------------------------------------------------- embedded builders
@pytest.mark.parametrize("domain", EMBEDDED_DOMAINS)
def test_builders_nonempty_and_deterministic(domain):
    a = build_domain_documents(domain, max_chars=60_000, seed=0)
    b = build_domain_documents(domain, max_chars=60_000, seed=0)
    c = build_domain_documents(domain, max_chars=60_000, seed=1)
    assert a and all(isinstance(d, str) and d.strip() for d in a)
    assert sum(map(len, a)) >= 60_000 or domain == "web"
    assert a == b
    assert a != c
    validate_documents(domain, a)


def test_unknown_domain():
    with pytest.raises(ConfigError, match="unknown embedded domain"):
        build_domain_documents("poetry")


def test_domain_formats():
    assert build_domain_documents("math", 2_000)[0].startswith("Question: ")
    sft = build_domain_documents("sft", 2_000)
    assert all(d.startswith("### Instruction:\n") and "\n### Response:\n" in d for d in sft)
    web = build_domain_documents("web", 50_000)
    assert not any(">>>" in d or "def " in d.split("\n")[0] for d in web)


def test_general_is_balanced_and_deterministic():
    g = build_general_documents(80_000, seed=0)
    assert g == build_general_documents(80_000, seed=0)
    assert 70_000 <= sum(map(len, g)) <= 90_000
    assert sum(len(d) for d in g if d.startswith("### Instruction:")) >= 15_000
    assert sum(len(d) for d in g if d.startswith("Question: ")) >= 15_000


def test_benchmark_items_do_not_leak_into_corpora():
    code = "\n".join(build_domain_documents("code", max_chars=4_000_000, seed=0))
    for it in _items("mm_code"):
        window = it["query"] + it["choices"][it["gold"]]
        assert window not in code, it["source"]
    web = "\n".join(build_domain_documents("web", max_chars=10_000_000, seed=0))
    web += "\n".join(build_general_documents(400_000, seed=0))
    for it in _items("mm_prose"):
        sentence = it["query"] + it["choices"][it["gold"]]
        assert sentence not in web, it["source"]
    # the bits-per-byte paragraphs: held-out units only, and neither a paragraph nor a sentence of one is trained on
    from mergemix_dagster.core.data.defaults.prose import split_sentences
    from mergemix_dagster.core.data.defaults.split import is_heldout

    bpb = _items("mm_prose_bpb")
    assert len(bpb) == len({it["text"] for it in bpb})
    for it in bpb:
        assert is_heldout(it["source"].removeprefix("python-docs:")), it["source"]
        assert it["text"] not in web, it["source"]
        for sentence in split_sentences(it["text"]):
            assert len(sentence) < 40 or sentence not in web, (it["source"], sentence)
    # the code bits-per-byte blocks: held-out files only, and neither a block nor a long line of one is trained on
    code_lines = {ln.strip() for ln in code.split("\n")}
    code_bpb = _items("mm_code_bpb")
    assert len(code_bpb) == len({it["text"] for it in code_bpb})
    for it in code_bpb:
        assert is_heldout(it["source"].removeprefix("stdlib:")), it["source"]
        assert it["text"] not in code, it["source"]
        assert not any(len(ln.strip()) >= 40 and ln.strip() in code_lines for ln in it["text"].split("\n")), it["source"]
    # held-out word-problem templates never appear in the math training data
    math = "\n".join(build_domain_documents("math", max_chars=1_000_000, seed=0))
    math += "\n".join(build_general_documents(400_000, seed=0))
    for phrase in ("Someone puts", "were taken out", "in every row"):
        assert phrase in "".join(it["query"] for it in _items("mm_arith_words"))
        assert phrase not in math


def test_benchmark_files_well_formed():
    counts = {}
    for path in sorted(TASK_DATA.glob("*.jsonl")):
        items = _items(path.stem)
        counts[path.stem] = len(items)
        if path.stem in ("mm_prose_bpb", "mm_code_bpb"):  # whole texts for bits per byte, not multiple choice
            assert all(set(it) == {"id", "text", "source"} and 150 <= len(it["text"]) <= 600 for it in items)
            assert [it["id"] for it in items] == list(range(len(items)))
            continue
        for it in items:
            assert len(it["choices"]) == 4 and len(set(it["choices"])) == 4
            assert 0 <= it["gold"] < 4 and it["query"]
        golds = [it["gold"] for it in items]
        assert max(golds.count(g) for g in range(4)) < 0.4 * len(items)  # gold position is shuffled
    assert set(counts) == {"mm_math", "mm_code", "mm_prose", "mm_facts", "mm_arith_words", "mm_prose_bpb", "mm_code_bpb"}
    # shortest first: lm-eval batches rolling windows in file order, so neighbours pad to similar lengths
    lengths = [len(it["text"]) for it in _items("mm_code_bpb")]
    assert lengths == sorted(lengths)
    assert all(150 <= n <= 300 for n in counts.values()), counts


def test_generated_benchmarks_are_reproducible(tmp_path):
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_benchmarks.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    # pure generators (no dependence on the interpreter's stdlib version) must match byte for byte
    for name in ("mm_math", "mm_arith_words"):
        assert (tmp_path / "data" / f"{name}.jsonl").read_bytes() == (TASK_DATA / f"{name}.jsonl").read_bytes()
    # every YAML byte is in the evaluation fingerprints: the script writes the shipped ones unchanged
    shipped = sorted(p.name for p in TASK_DATA.parent.glob("*.yaml"))
    assert sorted(p.name for p in tmp_path.glob("*.yaml")) == shipped
    for name in shipped:
        assert (tmp_path / name).read_bytes() == (TASK_DATA.parent / name).read_bytes(), name
