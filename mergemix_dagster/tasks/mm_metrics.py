"""Per-item metrics of the bundled tasks (lm-eval ``process_results``): multiple choice, and bits per byte.

``acc`` and ``acc_norm`` are lm-eval's usual definitions. ``gold_prob`` is the probability the model puts
on the gold choice after a softmax over the choices' log-likelihoods: 1/#choices for a model that cannot
tell them apart, 1 for a certain and right one. It moves smoothly with the weights, so a tiny model's small
skill gains show up instead of drowning in accuracy's 0/1 flips near chance (the reason the embedded default
ranks mixtures by it; see docs/results.md).
"""

import math


def process_results(doc, results):
    lls = [float(r[0]) for r in results]  # one (log-likelihood, is_greedy) pair per choice
    gold = int(doc["gold"])
    choices = doc["choices"]
    top = max(lls)
    weights = [math.exp(x - top) for x in lls]
    norm = [ll / max(1, len(c)) for ll, c in zip(lls, choices)]
    return {
        "acc": float(lls.index(top) == gold),
        "acc_norm": float(norm.index(max(norm)) == gold),
        "gold_prob": weights[gold] / sum(weights),
    }


def process_results_rolling(doc, results):
    """Per-document metrics of the bundled ``loglikelihood_rolling`` (bits-per-byte) tasks.

    lm-eval hands ``results`` as a one-element list: the document's total log-likelihood (natural log, summed
    over every token of ``doc["text"]``). ``byte_prob`` = exp(log-likelihood / UTF-8 bytes) is the geometric-
    mean probability per byte, 2 ** -(bits per byte) of the document: higher is better, aggregated by a plain
    mean, so each document is an item the paired comparison can use. ``bits_per_byte`` is lm-eval's usual
    (log-likelihood, bytes) pair, aggregated over the whole task by lm-eval's ``bits_per_byte`` (for reporting).
    """
    (loglikelihood,) = results
    loglikelihood = float(loglikelihood)
    n_bytes = len(doc["text"].encode("utf-8"))
    return {
        "byte_prob": math.exp(loglikelihood / n_bytes),
        "bits_per_byte": (loglikelihood, n_bytes),
    }
