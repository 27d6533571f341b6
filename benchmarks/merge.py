"""Benchmark the streaming checkpoint merge against the memory floor and against mergekit.

Not a test: it builds a Llama-architecture model of a chosen size, writes a base and K experts
(base + a small random perturbation) as sharded safetensors Hugging Face checkpoints into a
scratch folder (reused when present), then, in ONE run, prints:

1. the memory floor: the time to read the K + 1 input checkpoints' bytes and to write one
   checkpoint's bytes at the read / write bandwidth measured in the same run
   (floor = bytes_read / read_bw + bytes_written / write_bw). Reads are WARM page cache: every
   file is read once before anything is timed, and every later measurement (our merge, mergekit)
   also reads from a warm cache. The write bandwidth is measured with fsync, so the floor is for a
   durable output; our merge is timed both without and with an fsync of its output;
2. our streaming merge (``merge_checkpoints``, method ``linear`` or ``--method``): wall time and
   floor / ours;
3. peak memory of our merge, measured in a subprocess (its ``VmHWM``, plus a /proc sampler that
   splits anonymous memory from file-backed mmap pages), against the size of the largest tensor;
4. mergekit ``task_arithmetic`` (``normalize: false``) on the same checkpoints, run from its own
   venv (``benchmarks/.venv-mergekit``, see ``--setup-mergekit``): wall time and peak memory
   (linear only);
5. equality: our linear output against mergekit's output, tensor by tensor (max abs diff).

Usage::

    .venv/bin/python benchmarks/merge.py --setup-mergekit     # once: mergekit venv
    .venv/bin/python benchmarks/merge.py                      # ~100M params, 4 experts
    .venv/bin/python benchmarks/merge.py --params-m 20 --experts 2 --no-mergekit
    .venv/bin/python benchmarks/merge.py --method ties        # our TIES (whole-tensor path) alone
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = REPO / "benchmarks" / ".scratch"
DEFAULT_MK_VENV = REPO / "benchmarks" / ".venv-mergekit"
MK_REQUIREMENTS = REPO / "benchmarks" / "requirements-mergekit.txt"
SAFETENSORS_INDEX = "model.safetensors.index.json"

MB = 1e6
GB = 1e9


# ----------------------------------------------------------------------------------------------
# mergekit venv
# ----------------------------------------------------------------------------------------------


def project_torch_pin() -> str:
    """``torch==<exact version of this interpreter's torch>`` (e.g. ``torch==2.13.0+cpu``)."""
    try:
        import torch

        return f"torch=={torch.__version__}"
    except ImportError:
        return "torch==2.13.0"


def setup_mergekit(venv: Path, torch_pin: str) -> None:
    """Create ``venv`` with torch installed first (pinned by a constraints file), then mergekit.

    The constraints file pins torch for both installs, so mergekit's ``torch>=2.0`` can never make
    pip fetch another (CUDA, multi-GB) build.
    """
    if not (venv / "bin" / "python").exists():
        print(f"creating venv {venv}")
        subprocess.run([getattr(sys, "_base_executable", None) or "python3", "-m", "venv", str(venv)], check=True)
    constraints = venv / "constraints.txt"
    constraints.write_text(torch_pin + "\n")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-c", str(constraints)]
    print(f"installing {torch_pin} (constraints: {constraints})")
    subprocess.run([*pip, torch_pin], check=True)
    print(f"installing mergekit from {MK_REQUIREMENTS}")
    subprocess.run([*pip, "-r", str(MK_REQUIREMENTS)], check=True)
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import torch, mergekit, importlib.metadata as m; "
         "print('torch', torch.__version__, 'mergekit', m.version('mergekit'))"],
        check=True, capture_output=True, text=True,
    )
    print(out.stdout.strip())


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------


def llama_config(params_m: float, vocab: int = 32000):
    """A ``LlamaConfig`` with about ``params_m`` million parameters (untied embeddings, like Llama 2)."""
    from transformers import LlamaConfig

    target = params_m * 1e6
    if target <= 400e6:
        d, inter, heads = 768, 2048, 12
    elif target <= 2000e6:
        d, inter, heads = 2048, 5632, 16
    else:
        d, inter, heads = 4096, 11008, 32
    if target < 2 * vocab * d + 4 * d * d + 3 * d * inter:  # too small for d: shrink everything
        d, inter, heads, vocab = 256, 688, 4, 8192
    per_layer = 4 * d * d + 3 * d * inter + 2 * d
    layers = max(1, round((target - 2 * vocab * d - d) / per_layer))
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=d,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        use_cache=False,
    )


def checkpoint_files(directory: Path) -> list[Path]:
    index = directory / SAFETENSORS_INDEX
    if index.exists():
        return [directory / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return sorted(directory.glob("*.safetensors"))


def checkpoint_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in checkpoint_files(directory))


def build_checkpoints(workdir: Path, params_m: float, experts: int, shard_size: str, dtype: str, noise: float, seed: int):
    """Base + ``experts`` perturbed copies under ``workdir/ckpt-<tag>/``; reused if a stamp matches."""
    import torch
    from transformers import LlamaForCausalLM

    from mergemix_dagster.core.training.model import save_checkpoint

    spec = {"params_m": params_m, "experts": experts, "shard_size": shard_size, "dtype": dtype, "noise": noise, "seed": seed}
    tag = f"{params_m:g}M-{dtype}-k{experts}-s{shard_size}"
    root = workdir / f"ckpt-{tag}"
    stamp = root / "spec.json"
    names = [f"expert{i}" for i in range(experts)]
    if stamp.exists() and json.loads(stamp.read_text()) == spec:
        print(f"reusing checkpoints in {root}")
        return root / "base", {n: root / n for n in names}
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    config = llama_config(params_m)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    n = sum(p.numel() for p in model.parameters())
    print(f"built Llama: {n / 1e6:.1f}M params, d={config.hidden_size}, layers={config.num_hidden_layers}, "
          f"vocab={config.vocab_size}, {dtype} ({time.perf_counter() - t0:.1f}s)")
    save_checkpoint(model, None, root / "base", max_shard_size=shard_size)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name in names:
            for k, p in model.state_dict().items():
                b = base[k]
                p.copy_(b + noise * torch.randn(b.shape, generator=gen, dtype=torch.float32).to(b.dtype))
            save_checkpoint(model, None, root / name, max_shard_size=shard_size)
            print(f"  wrote {name}")
    del model, base
    stamp.write_text(json.dumps(spec))
    print(f"checkpoints in {root} ({time.perf_counter() - t0:.1f}s)")
    return root / "base", {n: root / n for n in names}


def tensor_sizes(directory: Path) -> dict[str, int]:
    """``{name: nbytes}`` from the safetensors headers (no tensor data read)."""
    sizes = {}
    for f in checkpoint_files(directory):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for k, v in header.items():
            if k != "__metadata__":
                a, b = v["data_offsets"]
                sizes[k] = b - a
    return sizes


# ----------------------------------------------------------------------------------------------
# memory floor
# ----------------------------------------------------------------------------------------------

CHUNK = 16 << 20


def read_files(files: list[Path]) -> int:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while True:
                n = fh.readinto(view)
                if not n:
                    break
                total += n
    return total


def write_file(path: Path, nbytes: int, fsync: bool) -> None:
    block = os.urandom(CHUNK)
    with open(path, "wb", buffering=0) as fh:
        left = nbytes
        while left > 0:
            n = min(left, CHUNK)
            fh.write(block[:n] if n < CHUNK else block)
            left -= n
        if fsync:
            os.fsync(fh.fileno())


def fsync_dir_files(directory: Path) -> None:
    for f in sorted(directory.iterdir()):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def measure_floor(inputs: list[Path], out_bytes: int, scratch: Path, repeats: int) -> dict:
    files = [f for d in inputs for f in checkpoint_files(d)]
    read_files(files)  # warm the page cache: everything below reads warm
    bytes_read = sum(f.stat().st_size for f in files)
    read_s = min(_timed(lambda: read_files(files)) for _ in range(repeats))
    target = scratch / "floor-write.bin"
    write_sync, write_nosync = [], []
    for _ in range(repeats):
        target.unlink(missing_ok=True)
        os.sync()
        write_sync.append(_timed(lambda: write_file(target, out_bytes, fsync=True)))
        target.unlink()
        os.sync()
        write_nosync.append(_timed(lambda: write_file(target, out_bytes, fsync=False)))
        target.unlink()
        os.sync()
    read_bw = bytes_read / read_s
    wbw, wbw_cache = out_bytes / min(write_sync), out_bytes / min(write_nosync)
    return {
        "bytes_read": bytes_read,
        "bytes_written": out_bytes,
        "read_bw": read_bw,
        "write_bw_fsync": wbw,
        "write_bw_pagecache": wbw_cache,
        "floor_s": bytes_read / read_bw + out_bytes / wbw,
        "floor_pagecache_s": bytes_read / read_bw + out_bytes / wbw_cache,
    }


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ----------------------------------------------------------------------------------------------
# subprocess runner with peak memory
# ----------------------------------------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS", "RssAnon", "RssFile", "VmHWM")):
                    k, v = line.split(":")
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def run_measured(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run ``cmd``; wall time, sampled RSS peaks, and what the child prints on its ``BENCH=`` line.

    The peak that counts is the child's own ``VmHWM`` (it prints it just before exiting): it belongs
    to the child's address space after ``exec``. ``ru_maxrss`` from ``wait4`` / RUSAGE_CHILDREN is
    kept in the JSON only: on Linux it also counts the parent's RSS at ``fork`` (the pre-exec mm's
    high-water mark is folded in at exec), so it reads at least this benchmark process's own RSS.
    """
    peaks = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        done = threading.Event()

        def sample():
            while not done.is_set():
                s = _status(proc.pid)
                for k in peaks:
                    peaks[k] = max(peaks[k], s.get(k, 0))
                time.sleep(0.005)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        th.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    result = {"rc": proc.returncode, "wall_s": wall, "ru_maxrss_incl_parent": usage.ru_maxrss * 1024,
              "peak_anon": peaks["RssAnon"], "peak_file": peaks["RssFile"]}
    # the child prints one JSON line starting with BENCH= (its own timings)
    for line in log.read_text().splitlines():
        if line.startswith("BENCH="):
            result.update(json.loads(line[len("BENCH="):]))
    return result


OUR_CHILD = textwrap.dedent(
    """
    import json, sys, time
    def rss():
        with open('/proc/self/status') as f:
            return {l.split(':')[0]: int(l.split()[1]) * 1024 for l in f if l.startswith(('VmRSS', 'RssAnon', 'RssFile', 'VmHWM'))}
    from pathlib import Path
    import torch
    from mergemix_dagster.core.merge import merge_checkpoints
    from mergemix_dagster.core.mixture import Mixture
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec['threads'])
    mixture = Mixture(tuple(spec['experts']), tuple(spec['weights']))
    before = rss()
    t = time.perf_counter()
    merge_checkpoints(spec['base'], spec['experts'], mixture, Path(spec['out']), method=spec['method'],
                      max_shard_size=spec['shard_size'])
    merge_s = time.perf_counter() - t
    t = time.perf_counter()
    out = Path(spec['out'])
    import os
    for f in sorted(out.iterdir()):
        fd = os.open(f, os.O_RDONLY); os.fsync(fd); os.close(fd)
    fsync_s = time.perf_counter() - t
    print('BENCH=' + json.dumps({'merge_s': merge_s, 'fsync_s': fsync_s, 'rss_before': before['VmRSS'],
                                 'anon_before': before['RssAnon'], 'hwm': rss()['VmHWM']}))
    """
)

IMPORT_ONLY = textwrap.dedent(
    """
    import importlib, json, sys
    for m in sys.argv[1:]:
        importlib.import_module(m)
    with open('/proc/self/status') as f:
        hwm = [int(l.split()[1]) * 1024 for l in f if l.startswith('VmHWM')][0]
    print('BENCH=' + json.dumps({'hwm': hwm}))
    """
)

MK_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    t0 = time.perf_counter()
    import torch
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    import yaml
    def rss():
        with open('/proc/self/status') as f:
            return {l.split(':')[0]: int(l.split()[1]) * 1024 for l in f if l.startswith(('VmRSS', 'RssAnon', 'RssFile', 'VmHWM'))}
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec['threads'])
    import_s = time.perf_counter() - t0
    with open(spec['config']) as f:
        config = MergeConfiguration.model_validate(yaml.safe_load(f))
    before = rss()
    t = time.perf_counter()
    run_merge(config, out_path=spec['out'], options=MergeOptions(**spec['options']))
    merge_s = time.perf_counter() - t
    t = time.perf_counter()
    for f in sorted(os.listdir(spec['out'])):
        p = os.path.join(spec['out'], f)
        if os.path.isfile(p):
            fd = os.open(p, os.O_RDONLY); os.fsync(fd); os.close(fd)
    fsync_s = time.perf_counter() - t
    print('BENCH=' + json.dumps({'merge_s': merge_s, 'fsync_s': fsync_s, 'import_s': import_s,
                                 'rss_before': before['VmRSS'], 'anon_before': before['RssAnon'],
                                 'hwm': rss()['VmHWM']}))
    """
)


def mergekit_config(base: Path, experts: dict[str, Path], weights: dict[str, float], dtype: str) -> str:
    lines = ["merge_method: task_arithmetic", f"base_model: {base}", f"dtype: {dtype}", f"out_dtype: {dtype}",
             "parameters:", "  normalize: false", "models:"]
    for name, path in experts.items():
        lines += [f"  - model: {path}", "    parameters:", f"      weight: {weights[name]!r}"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# equality
# ----------------------------------------------------------------------------------------------


def compare(ours: Path, theirs: Path) -> dict:
    import torch
    from safetensors import safe_open

    def where(d: Path):
        m = {}
        for f in checkpoint_files(d):
            with safe_open(str(f), framework="pt") as h:
                for k in h.keys():
                    m[k] = f
        return m

    a, b = where(ours), where(theirs)
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    max_abs, max_rel, worst, n_equal, dtypes_equal = 0.0, 0.0, None, 0, True
    for k in sorted(set(a) & set(b)):
        with safe_open(str(a[k]), framework="pt") as ha, safe_open(str(b[k]), framework="pt") as hb:
            x, y = ha.get_tensor(k), hb.get_tensor(k)
        dtypes_equal &= x.dtype == y.dtype
        if x.shape != y.shape:
            raise SystemExit(f"shape mismatch for {k}: {tuple(x.shape)} vs {tuple(y.shape)}")
        if torch.equal(x, y):
            n_equal += 1
            continue
        diff = (x.double() - y.double()).abs().max().item()
        rel = diff / max(y.double().abs().max().item(), 1e-30)
        if diff > max_abs:
            max_abs, worst = diff, k
        max_rel = max(max_rel, rel)
    return {"common": len(set(a) & set(b)), "only_ours": only_a, "only_mergekit": only_b, "bit_equal": n_equal,
            "max_abs_diff": max_abs, "max_rel_diff": max_rel, "worst": worst, "dtypes_equal": dtypes_equal}


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


def fmt_bytes(n: float) -> str:
    return f"{n / MB:,.0f} MB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Figures are printed; nothing is asserted. See docs/merge-benchmarks.md.")
    p.add_argument("--params-m", type=float, default=100.0, help="model size in millions of parameters (default 100)")
    p.add_argument("--experts", type=int, default=4, help="number of experts K (default 4)")
    p.add_argument("--shard-size", default="100MB", help="max safetensors shard size of every checkpoint (default 100MB)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="checkpoint dtype")
    p.add_argument("--noise", type=float, default=1e-3, help="std of the expert perturbation (default 1e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"scratch folder (default {DEFAULT_WORKDIR.relative_to(REPO)})")
    p.add_argument("--threads", type=int, default=1, help="torch threads in both merge processes (default 1)")
    p.add_argument("--method", default="linear", choices=["linear", "ties", "dare"],
                   help="our merge method (default linear; mergekit is run for linear only)")
    p.add_argument("--repeats", type=int, default=3, help="bandwidth measurements: best of N (default 3)")
    p.add_argument("--mergekit-python", type=Path, default=None,
                   help="python of a venv with mergekit (default benchmarks/.venv-mergekit/bin/python if it exists)")
    p.add_argument("--no-mergekit", action="store_true", help="skip the mergekit comparison")
    p.add_argument("--setup-mergekit", action="store_true",
                   help="create benchmarks/.venv-mergekit (torch pinned to this venv's build, then mergekit) and exit")
    p.add_argument("--json", type=Path, default=None, help="also write all figures to this JSON file")
    args = p.parse_args(argv)

    if args.setup_mergekit:
        setup_mergekit(DEFAULT_MK_VENV, project_torch_pin())
        return 0

    sys.path.insert(0, str(REPO))
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    base, experts = build_checkpoints(workdir, args.params_m, args.experts, args.shard_size, args.dtype, args.noise, args.seed)
    run_dir = workdir / "runs"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()

    # weights: a generic interior point of the simplex (no vertex shortcut), fixed
    raw = [i + 1.0 for i in range(args.experts)]
    weights = {n: w / sum(raw) for n, w in zip(experts, raw)}

    sizes = tensor_sizes(base)
    largest_name = max(sizes, key=sizes.get)
    largest = sizes[largest_name]
    ckpt_bytes = checkpoint_bytes(base)
    report: dict = {"params_m": args.params_m, "experts": args.experts, "dtype": args.dtype, "shard_size": args.shard_size,
                    "method": args.method,
                    "checkpoint_bytes": ckpt_bytes, "largest_tensor": largest_name, "largest_tensor_bytes": largest,
                    "threads": args.threads, "cpus": os.cpu_count()}
    print(f"\ncheckpoint: {fmt_bytes(ckpt_bytes)} in {len(checkpoint_files(base))} shard(s), {len(sizes)} tensors, "
          f"largest {largest_name} {fmt_bytes(largest)}; K={args.experts}; weights {[round(w, 4) for w in weights.values()]}")

    # 1. floor (warm cache)
    floor = measure_floor([base, *experts.values()], ckpt_bytes, run_dir, args.repeats)
    report["floor"] = floor
    print("\n[floor]  warm page cache (every input read once before timing), best of", args.repeats)
    print(f"  read  {fmt_bytes(floor['bytes_read'])} at {floor['read_bw'] / GB:.2f} GB/s")
    print(f"  write {fmt_bytes(floor['bytes_written'])} at {floor['write_bw_fsync'] / GB:.2f} GB/s with fsync "
          f"({floor['write_bw_pagecache'] / GB:.2f} GB/s into the page cache, no fsync)")
    print(f"  floor = {floor['floor_s']:.2f} s durable ({floor['floor_pagecache_s']:.2f} s page-cache write)")

    # 2-3. ours, in a subprocess
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=str(args.threads))
    baseline = run_measured([sys.executable, "-c", IMPORT_ONLY, "torch", "mergemix_dagster.core.merge"],
                            run_dir / "ours-import.log", env)
    ours_out = run_dir / "ours"
    spec = {"base": str(base), "experts": {k: str(v) for k, v in experts.items()}, "weights": list(weights.values()),
            "out": str(ours_out), "shard_size": args.shard_size, "threads": args.threads, "method": args.method}
    ours = run_measured([sys.executable, "-c", OUR_CHILD, json.dumps(spec)], run_dir / "ours.log", env)
    if ours["rc"] != 0:
        print((run_dir / "ours.log").read_text())
        raise SystemExit("our merge failed")
    ours["import_hwm"] = baseline["hwm"]
    report["ours"] = ours
    durable = ours["merge_s"] + ours["fsync_s"]
    inc = ours["hwm"] - ours["rss_before"]
    inc_anon = ours["peak_anon"] - ours["anon_before"]
    print(f"\n[ours]   merge_checkpoints(method={args.method!r}) in a subprocess,", args.threads, "torch thread(s)")
    print(f"  merge {ours['merge_s']:.2f} s, + fsync of output {ours['fsync_s']:.2f} s = {durable:.2f} s "
          f"(process wall incl. imports {ours['wall_s']:.2f} s)")
    print(f"  floor / ours = {floor['floor_s'] / durable:.2f} durable "
          f"({floor['floor_pagecache_s'] / ours['merge_s']:.2f} page-cache floor / merge without fsync)")
    print(f"  peak RSS {fmt_bytes(ours['hwm'])} (VmHWM of the child); {fmt_bytes(ours['rss_before'])} before the merge "
          f"(imports); merge adds {fmt_bytes(inc)} = {inc / largest:.1f} x largest tensor")
    print(f"  of which anonymous (sampled every 5 ms): peak {fmt_bytes(ours['peak_anon'])}, +{fmt_bytes(inc_anon)} "
          f"= {inc_anon / largest:.1f} x largest tensor; file-backed mmap pages peak {fmt_bytes(ours['peak_file'])}")

    # 4. mergekit
    mk_python = args.mergekit_python or (DEFAULT_MK_VENV / "bin" / "python")
    if args.no_mergekit:
        print("\n[mergekit] skipped (--no-mergekit)")
    elif args.method != "linear":
        print(f"\n[mergekit] skipped: compared for --method linear only (task_arithmetic), not {args.method!r}")
    elif not Path(mk_python).exists():
        print(f"\n[mergekit] skipped: no mergekit python at {mk_python} "
              f"(create it with `python benchmarks/merge.py --setup-mergekit`, or pass --mergekit-python)")
    else:
        cfg = run_dir / "mergekit.yml"
        cfg.write_text(mergekit_config(base, experts, weights, args.dtype))
        mk_out = run_dir / "mergekit"
        mk_env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        mk_env.pop("PYTHONPATH", None)
        mk_spec = {"config": str(cfg), "out": str(mk_out), "threads": args.threads,
                   "options": {"lazy_unpickle": True, "copy_tokenizer": False, "low_cpu_memory": False,
                               "out_shard_size": _parse_size(args.shard_size), "safe_serialization": True,
                               "quiet": True}}
        mk_base = run_measured([str(mk_python), "-c", IMPORT_ONLY, "torch", "mergekit.merge"], run_dir / "mk-import.log", mk_env)
        mk = run_measured([str(mk_python), "-c", MK_CHILD, json.dumps(mk_spec)], run_dir / "mergekit.log", mk_env)
        if mk["rc"] != 0:
            print((run_dir / "mergekit.log").read_text()[-4000:])
            print("[mergekit] FAILED (log above)")
        else:
            mk["import_hwm"] = mk_base["hwm"]
            report["mergekit"] = mk
            mk_durable = mk["merge_s"] + mk["fsync_s"]
            mk_inc = mk["hwm"] - mk["rss_before"]
            mk_inc_anon = mk["peak_anon"] - mk["anon_before"]
            print(f"\n[mergekit] task_arithmetic (normalize: false, lazy_unpickle) via run_merge, {args.threads} torch thread(s)")
            print(f"  config: {cfg}")
            print(f"  merge {mk['merge_s']:.2f} s, + fsync {mk['fsync_s']:.2f} s = {mk_durable:.2f} s "
                  f"(process wall incl. imports {mk['wall_s']:.2f} s); floor / mergekit = {floor['floor_s'] / mk_durable:.2f}; "
                  f"ours takes {durable / mk_durable:.2f}x the time of mergekit")
            print(f"  peak RSS {fmt_bytes(mk['hwm'])} (VmHWM); {fmt_bytes(mk['rss_before'])} before the merge; merge adds "
                  f"{fmt_bytes(mk_inc)} = {mk_inc / largest:.1f} x largest tensor; anonymous +{fmt_bytes(mk_inc_anon)} "
                  f"= {mk_inc_anon / largest:.1f} x largest tensor")
            # 5. equality
            eq = compare(ours_out, mk_out)
            report["equality"] = eq
            tol = 1e-6 if args.dtype == "float32" else 1e-2
            ok = not eq["only_ours"] and not eq["only_mergekit"] and eq["max_rel_diff"] <= tol and eq["dtypes_equal"]
            print(f"\n[equality] ours vs mergekit: {eq['common']} common tensors, {eq['bit_equal']} bit-identical; "
                  f"max abs diff {eq['max_abs_diff']:.3g} ({eq['worst']}), max diff relative to the tensor's max |value| "
                  f"{eq['max_rel_diff']:.3g}; tolerance {tol:g} relative -> {'EQUAL' if ok else 'DIFFERENT'}")
            if eq["only_ours"] or eq["only_mergekit"]:
                print(f"  only in ours: {eq['only_ours'][:5]}; only in mergekit: {eq['only_mergekit'][:5]}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"\nfigures written to {args.json}")
    return 0


def _parse_size(s: str) -> int:
    sys.path.insert(0, str(REPO))
    from mergemix_dagster.core.merge.streaming import parse_size

    return parse_size(s)


if __name__ == "__main__":
    raise SystemExit(main())
