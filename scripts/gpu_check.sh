#!/usr/bin/env bash
# GPU check for anyone with CUDA GPUs (NEVER RUN by us: the machine this was written on has no GPU).
#
# 1. builds a ~100M-parameter Llama (hidden 768, 12 layers) and a BPE tokenizer from the embedded corpora,
# 2. trains two experts (math, code) from it in bf16 through the torchrun entry point (mergemix-train),
#    STEPS steps each on all local GPUs,
# 3. merges them on the GPU with the in-memory merger at α = (0.5, 0.5) and scores base / experts / merge
#    by held-out loss on each domain,
# 4. prints tokens/s and model FLOPs utilization (MFU = 6·N·tokens/s / (GPUs × PEAK_TFLOPS)).
#
#   bash scripts/gpu_check.sh            # env: STEPS (300), NPROC (all GPUs), PEAK_TFLOPS (989: H100 bf16 dense)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-300}
NPROC=${NPROC:-$($PY -c 'import torch; print(max(1, torch.cuda.device_count()))')}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
WORK=${WORK:-$(mktemp -d -t mergemix-gpu-XXXX)}
$PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: this check needs a GPU")'
echo "gpu_check: $NPROC GPU(s), $STEPS steps per expert, work dir $WORK"

$PY - "$WORK" <<'PYEOF'
import sys
from pathlib import Path
from mergemix_dagster.core.data.corpora import write_corpus
from mergemix_dagster.core.data.defaults import build_domain_documents, build_general_documents
from mergemix_dagster.core.training.mixture_file import write_mixture_file
from mergemix_dagster.core.training.model import TinyModelSpec, new_tiny_llama, save_checkpoint, train_tokenizer

work = Path(sys.argv[1])
docs = {d: build_domain_documents(d, max_chars=3_000_000) for d in ("math", "code")}
docs["general"] = build_general_documents(max_chars=3_000_000)
tok = train_tokenizer([t for v in docs.values() for t in v], vocab_size=8192)
spec = TinyModelSpec(vocab_size=8192, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=2048,
                     max_position_embeddings=1024)
model = new_tiny_llama(spec, tok, seed=0)
print(f"base: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
save_checkpoint(model, tok, work / "base")
for d, v in docs.items():
    write_corpus(v[: int(len(v) * 0.9)], work / f"{d}.jsonl.gz")
    write_corpus(v[int(len(v) * 0.9):], work / f"{d}.heldout.jsonl.gz")
recipe = {"seq_len": 1024, "batch_size": 32, "learning_rate": 3e-4, "schedule": "constant", "precision": "bf16",
          "device": "auto"}
for d in ("math", "code"):
    write_mixture_file(work / f"{d}.json", {d: 0.5, "general": 0.5},
                       {d: [str(work / f"{d}.jsonl.gz")], "general": [str(work / "general.jsonl.gz")]}, recipe)
PYEOF

TOKENS=$((STEPS * 32 * 1024))
for d in math code; do
  $PY -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m mergemix_dagster.core.training.ddp \
    --init "$WORK/base" --mixture "$WORK/$d.json" --tokens "$TOKENS" --out "$WORK/expert-$d" --save-every 100
done

$PY - "$WORK" "$NPROC" "$PEAK_TFLOPS" <<'PYEOF'
import json, sys, time
from pathlib import Path
import torch, torch.nn.functional as F
from mergemix_dagster.core.data.corpora import read_corpus, tokenize_documents
from mergemix_dagster.core.merge.inmemory import InMemoryMerger
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.training.model import load_checkpoint, load_state_dict

work, nproc, peak = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
model, tok = load_checkpoint(work / "base", device="cuda")
n_params = sum(p.numel() for p in model.parameters())
for d in ("math", "code"):
    r = json.loads((work / f".expert-{d}.state" / "report.json").read_text())
    mfu = 6 * n_params * r["tokens_per_second"] / (nproc * peak * 1e12)
    print(f"expert {d}: {r['tokens']:,} tokens, {r['tokens_per_second']:,.0f} tok/s on {nproc} GPU(s), "
          f"MFU {100 * mfu:.1f}%, final loss {r['final_loss']:.3f}")

held = {d: torch.from_numpy(tokenize_documents(read_corpus(work / f"{d}.heldout.jsonl.gz"), tok)[: 64 * 1025]
                            .astype("int64")).view(64, 1025).cuda() for d in ("math", "code")}

@torch.no_grad()
def heldout_loss():
    out = {}
    for d, w in held.items():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=w[:, :-1]).logits
        out[d] = float(F.cross_entropy(logits.float().flatten(0, 1), w[:, 1:].flatten()))
    return out

base_state = {k: v.cuda() for k, v in load_state_dict(work / "base").items()}
experts = {d: {k: v.cuda() for k, v in load_state_dict(work / f"expert-{d}").items()} for d in ("math", "code")}
merger = InMemoryMerger(model, base_state, experts, method="linear")
print("base:", heldout_loss())
for alpha in ((1.0, 0.0), (0.0, 1.0), (0.5, 0.5)):
    torch.cuda.synchronize(); t = time.perf_counter()
    merger.apply(Mixture(("math", "code"), alpha))
    torch.cuda.synchronize()
    print(f"merge α={alpha} on the GPU in {1000 * (time.perf_counter() - t):.1f} ms:", heldout_loss())
PYEOF
