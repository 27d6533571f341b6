"""From measured mixtures to the chosen one, framework-free: seed designs (``designs``), objectives
(``objective``), which capabilities the design resolves beyond paired noise (``resolution``), constraints
of the real run (``constraints``), LightGBM surrogates (``surrogate``), the
search on the simplex (``simplex``), DeMix rounds (``rounds``), the choose-and-verify rule (``choose``),
hierarchical mixtures (``hierarchy``) and ``mergemix fit`` on a team's own swarm (``fit``)."""
