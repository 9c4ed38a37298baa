"""detector: two-stage object detection with a swappable ROI layer.

The question this package answers: how much does the way a region of interest is pooled
(quantized RoIPool, RoIWarp, RoIAlign avg/max, Precise RoI Pooling) cost in accuracy?
"""

__version__ = "0.1.0"
