"""A stand-in for a team's own trainer (not the project's loop): plain HF + torch, driven by the command contract.

    python team_trainer.py --init BASE --mixture MIXTURE_JSON --tokens N --lr LR --out OUT [--corrupt nan|shape]

Reads the mixture file, samples windows per domain weight, trains with SGD, reports progress through
Dagster Pipes, and writes only the model (no tokenizer) to --out. ``--corrupt`` writes a bad checkpoint.
"""

import argparse, gzip, json, random

import torch
from dagster_pipes import open_dagster_pipes
from transformers import AutoModelForCausalLM, AutoTokenizer

p = argparse.ArgumentParser()
for flag in ("--init", "--mixture", "--tokens", "--lr", "--out", "--corrupt"):
    p.add_argument(flag, default=None)
a = p.parse_args()
with open_dagster_pipes() as pipes:
    mix = json.load(open(a.mixture))
    tok, model = AutoTokenizer.from_pretrained(a.init), AutoModelForCausalLM.from_pretrained(a.init)
    ids = {}
    for domain, spec in mix["domains"].items():
        text = "\n".join(json.loads(line)["text"] for path in spec["paths"] for line in gzip.open(path, "rt"))
        ids[domain] = tok(text)["input_ids"]
    seq, batch = 32, 4
    opt = torch.optim.SGD(model.parameters(), lr=float(a.lr))
    steps = max(1, int(a.tokens) // (seq * batch))
    rng = random.Random(0)
    for step in range(1, steps + 1):
        rows = []
        for _ in range(batch):
            d = rng.choices(list(mix["weights"]), weights=list(mix["weights"].values()))[0]
            start = rng.randrange(len(ids[d]) - seq)
            rows.append(ids[d][start:start + seq])
        x = torch.tensor(rows)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(); loss.backward(); opt.step()
        pipes.log.info(f"team step {step}/{steps} tokens {step * seq * batch} loss {loss.item():.4f}")
    if a.corrupt == "nan":
        with torch.no_grad():
            next(model.parameters())[0, 0] = float("nan")
    if a.corrupt == "shape":
        model.resize_token_embeddings(model.config.vocab_size + 8)
    model.save_pretrained(a.out)
    pipes.report_asset_materialization(metadata={"tokens": steps * seq * batch, "final_loss": loss.item()})
