"""``math`` domain: generated arithmetic worked problems (small-number +, -, *).

Every problem is computed, so every answer is right. The space of facts is small on purpose
(operands 0-15 for + and -, 0-12 for *): facts repeat, which is what lets a tiny model learn them.
The canonical format is the one ``mm_math`` uses::

    Question: What is 7 + 5?
    Answer: 7 + 5 = 12.

Word-problem templates are split in two disjoint lists: ``CORPUS_STORY_TEMPLATES`` appear in the
corpus; ``HELDOUT_STORY_TEMPLATES`` appear only in the held-out ``mm_arith_words`` benchmark.
"""

from __future__ import annotations

import random

OPS = ("+", "-", "*")
ADD_MAX = 15
MUL_MAX = 12
NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena", "Marco", "Nia")
ITEMS = ("apples", "books", "coins", "pencils", "stamps", "shells", "cards", "marbles", "stickers", "buttons")


def apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def sample_fact(rng: random.Random, op: str | None = None) -> tuple[str, int, int]:
    op = op or rng.choice(OPS)
    if op == "*":
        return op, rng.randint(0, MUL_MAX), rng.randint(0, MUL_MAX)
    a, b = rng.randint(0, ADD_MAX), rng.randint(0, ADD_MAX)
    if op == "-" and b > a:
        a, b = b, a  # results stay non-negative
    return op, a, b


def worked(op: str, a: int, b: int) -> str:
    return f"{a} {op} {b} = {apply(op, a, b)}."


# Question phrasings of a bare fact (the canonical one first, drawn half the time).
_OP_WORDS = {"+": ("sum", "add", "to", "plus"), "-": ("difference", "subtract", "from", "minus"), "*": ("product", "multiply", "by", "times")}


def question(rng: random.Random, op: str, a: int, b: int) -> str:
    noun, verb, prep, word = _OP_WORDS[op]
    if rng.random() < 0.5:
        return f"What is {a} {op} {b}?"
    forms = [
        f"Compute {a} {op} {b}.",
        f"Calculate {a} {op} {b}.",
        f"What is {a} {word} {b}?",
        f"What is the {noun} of {a} and {b}?" if op != "-" else f"What is {a} take away {b}?",
        f"Evaluate {a} {op} {b}.",
    ]
    if op == "+":
        forms.append(f"What do you get if you add {b} to {a}?")
    elif op == "-":
        forms.append(f"What do you get if you subtract {b} from {a}?")
    else:
        forms.append(f"What do you get if you multiply {a} by {b}?")
    return rng.choice(forms)


CORPUS_STORY_TEMPLATES = (
    # (operation, question, closing sentence); {n} name, {x} items, {c} result
    ("+", "{n} has {a} {x}. {n} gets {b} more {x}. How many {x} does {n} have now?", "{n} has {c} {x}."),
    ("-", "{n} has {a} {x} and gives away {b}. How many {x} are left?", "{c} {x} are left."),
    ("*", "{n} buys {a} bags with {b} {x} in each bag. How many {x} does {n} buy?", "{n} buys {c} {x}."),
)
HELDOUT_STORY_TEMPLATES = (
    ("+", "A shelf holds {a} {x}. Someone puts {b} more {x} on the shelf. How many {x} are on the shelf?"),
    ("-", "There were {a} {x} in a jar. {b} {x} were taken out. How many {x} remain in the jar?"),
    ("*", "A teacher makes {a} rows of {x} with {b} {x} in every row. How many {x} are there in total?"),
)


def story(rng: random.Random) -> str:
    op, q, close = rng.choice(CORPUS_STORY_TEMPLATES)
    _, a, b = sample_fact(rng, op)
    n, x = rng.choice(NAMES), rng.choice(ITEMS)
    c = apply(op, a, b)
    return f"Question: {q.format(n=n, x=x, a=a, b=b)}\nAnswer: {worked(op, a, b)} {close.format(n=n, x=x, c=c)}"


def two_step(rng: random.Random) -> str:
    a, b = rng.randint(0, ADD_MAX), rng.randint(0, ADD_MAX)
    s = a + b
    c = rng.randint(0, min(s, ADD_MAX))
    return f"Question: What is {a} + {b} - {c}?\nAnswer: {a} + {b} = {s}. {s} - {c} = {s - c}. The answer is {s - c}."


def problem(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.75:
        op, a, b = sample_fact(rng)
        return f"Question: {question(rng, op, a, b)}\nAnswer: {worked(op, a, b)}"
    if r < 0.9:
        return story(rng)
    return two_step(rng)


def build_math_documents(max_chars: int, seed: int) -> list[str]:
    """Documents of 1-8 problems separated by blank lines, until ``max_chars``."""
    rng = random.Random(f"math/{seed}")
    docs: list[str] = []
    total = 0
    while total < max_chars:
        doc = "\n\n".join(problem(rng) for _ in range(rng.randint(1, 8)))
        docs.append(doc)
        total += len(doc)
    return docs
