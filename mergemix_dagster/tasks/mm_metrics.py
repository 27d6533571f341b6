"""Per-item metrics of the bundled multiple-choice tasks (lm-eval ``process_results``).

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
