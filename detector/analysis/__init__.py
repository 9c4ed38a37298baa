"""Analyses that need no training: what the ROI layers' quantization does to real boxes.

- :mod:`.regions`: the image region each ROI layer reads, vectorized over boxes.
- :mod:`.coco_boxes`: a COCO file's ground-truth boxes as arrays, with COCO size labels.
- :mod:`.quantization`: the IoU / misalignment report (``python -m detector.analysis.quantization``).
- :mod:`.tables`, :mod:`.plots`: shared CSV/JSON/Markdown writers and matplotlib figures.
"""
