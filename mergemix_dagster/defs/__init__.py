"""The objects of the code location, one module per kind; each contributes a ``Definitions`` that
``mergemix_dagster/definitions.py`` merges: assets (with their jobs), sensors, schedules, automation, resources."""
