"""Fixtures of the ablation's tests: ``fake`` (stand-in train/evaluate/timing commands, see
ablation_stand_ins.py)."""

from ablation_stand_ins import fake  # noqa: F401 - registers the fixture for tests/ablation
