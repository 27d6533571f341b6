"""Training and checkpoints, framework-free: the tiny Llama, tokenizer and HF checkpoints on disk
(``model``), the one training loop (``loop``) and its ``torchrun`` command (``ddp``), the mixture file a
team's trainer reads (``mixture_file``), checks of a checkpoint someone else's trainer wrote
(``trained_checkpoint``), the exports of a chosen mixture (``exports``) and offline mode (``hub``)."""
