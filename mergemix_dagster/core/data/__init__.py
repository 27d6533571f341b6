"""The data side, framework-free: reading and hashing corpora (``corpora``), the embedded default corpora
(``defaults/``), sub-domain names (``subdomains``) and the token plan of the target run (``token_plan``).
A new domain needs no code here: it is a ``domains:`` entry in the settings (docs/data.md)."""
