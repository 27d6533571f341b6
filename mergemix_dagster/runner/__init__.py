"""``mergemix run`` without a daemon: plan.py decides what to (re)run, stage.py runs it, staleness.py says
what is missing or stale on Dagster's public APIs, instance.py opens the instance and holds the home's lock."""
