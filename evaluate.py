"""Evaluate checkpoints with pycocotools COCOeval, one or several side by side.

    python evaluate.py runs/quickstart/checkpoints/last.ckpt --output runs/quickstart/eval
    python evaluate.py A.ckpt B.ckpt --output runs/compare            # deltas against A
    python evaluate.py A.ckpt --images my_photos/ --output runs/predict   # any images, no annotations
    python evaluate.py A.ckpt --output runs/eval --data.dataset coco \\
        --data.val_images DIR/val --data.val_annotations DIR/annotations/instances_val.json
    python evaluate.py --help

Checkpoints load with torch.load(weights_only=True); each model is rebuilt from its saved
hyperparameters and checked against the data (class count, category ids and names of the
annotation file scored) before any image is read. Only the validation split is read. Writes
OUTPUT/metrics.json and OUTPUT/detections.json (see `detector.evaluation.runner`); an OUTPUT
that already holds results is refused unless ``--overwrite true``, and one that cannot be
written is refused before the work (see `detector.evaluation.output`).
"""

from detector.cli import main_evaluate

if __name__ == "__main__":
    main_evaluate()
