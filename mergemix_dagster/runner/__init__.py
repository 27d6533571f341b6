"""``mergemix run`` without a daemon: plan.py decides what to (re)run, stage.py runs it, staleness.py says
what is missing or stale on Dagster's public APIs, instance.py opens the instance and holds the home's lock;
hierarchy.py runs both levels of a hierarchical stage, checks.py reads a stage's asset checks back and
report.py gathers ``mergemix report``. (The daemon's sensors and schedules, in defs/, plan with
``staleness.next_runs`` only: see docs/architecture.md.)"""
