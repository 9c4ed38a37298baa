"""The feature-map geometry of the ops tests' `feat` / `rois` fixtures (tests/ops/conftest.py).

A module of its own, with a name no other test folder uses: `from conftest import ...` resolves
to whichever conftest.py pytest imported first, so it broke whenever tests/ops ran beside
another folder (e.g. `pytest tests/ops/test_roi_pool.py tests/data`).
"""

BATCH, CHANNELS, HEIGHT, WIDTH, SCALE = 2, 3, 9, 11, 0.5
