"""Train (or validate / test) a detector: LightningCLI over `DetectorModule` + `DetectionDataModule`.

    python train.py fit --config configs/quickstart.yaml
    python train.py fit --config configs/quickstart.yaml --ckpt_path last      # resume after a kill
    python train.py fit --config configs/backbones/resnet18_s32.yaml --config configs/roi/roi_pool.yaml
    python train.py fit --config configs/quickstart.yaml --model.init_from runs/other/checkpoints/best.ckpt --trainer.default_root_dir runs/finetune  # fine-tune
    python train.py test --config configs/quickstart.yaml --ckpt_path runs/quickstart/checkpoints/best.ckpt --data.synthetic_test 200   # test split
    python train.py predict --config configs/quickstart.yaml --ckpt_path runs/quickstart/checkpoints/best.ckpt   # ROOT/predictions.json
    python train.py fit --help                                                 # every option

See `detector.cli` for what the CLI adds to Lightning's.
"""

from detector.cli import main_train

if __name__ == "__main__":
    main_train()
