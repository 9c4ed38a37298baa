"""Every notebook executes from a clean kernel, on small settings, with this interpreter.

The kernel is a throw-away kernel spec whose argv is ``sys.executable -m ipykernel_launcher``,
so the notebooks run in exactly the environment of the tests (a fresh CI venv has no
registered "python3" kernel, and a machine-wide one may be another Python). Parameters are
overridden papermill-style: a cell inserted after the one tagged ``parameters``.
"""

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
NOTEBOOK_TIMEOUT_S = 60


def execute_notebook(path: Path, workdir: Path, parameters: dict | None = None,
                     timeout: int = NOTEBOOK_TIMEOUT_S) -> nbformat.NotebookNode:
    """Execute ``path`` in a fresh kernel of this interpreter, in ``workdir``; return the result."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    if parameters:
        tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
        if not tagged:
            raise ValueError(f"{path.name} has no cell tagged 'parameters' to override")
        code = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
        cell = nbformat.v4.new_code_cell(code)
        cell.metadata["tags"] = ["injected-parameters"]
        nb.cells.insert(tagged[0] + 1, cell)

    kernels = workdir / ".kernels"
    spec = kernels / "detector-test"
    spec.mkdir(parents=True, exist_ok=True)
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "detector tests", "language": "python",
        "env": {"PYTHONPATH": pythonpath, "IPYTHONDIR": str(workdir / ".ipython")},
    }))
    km = KernelManager(kernel_name="detector-test",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    client = NotebookClient(nb, km=km, timeout=timeout, startup_timeout=120,
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return nb


def text_outputs(nb) -> str:
    """All stream and text/plain / text/markdown outputs, concatenated."""
    parts = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            if o.get("output_type") == "stream":
                parts.append(o.get("text", ""))
            data = o.get("data", {})
            parts += [data.get("text/plain", ""), data.get("text/markdown", "")]
    return "\n".join(parts)


def count_images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


@pytest.fixture
def jupyter_dirs(tmp_path, monkeypatch):
    """Keep connection files and IPython state out of the user's home."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / ".runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / ".ipython"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return tmp_path


@pytest.fixture(scope="module")
def built_ops():
    """Build detector.ops' C++ kernels (once, cached on disk) before any notebook cell's clock
    starts: on a fresh machine the first build takes tens of seconds, which is not the
    notebook's time."""
    import torch

    from detector.ops import prroi_pool, roi_align

    x, rois = torch.ones(1, 1, 4, 4), torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0]])
    roi_align(x, rois, 2, 1.0, sampling_ratio=2, mode="max")
    prroi_pool(x, rois, 2, 1.0)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None, (
                f"{path.name} cell {i} has stored outputs; clear them before committing")
    assert path.stat().st_size < 100_000


def test_01_roi_pool_vs_roi_align_executes(jupyter_dirs, built_ops):
    nb = execute_notebook(NOTEBOOKS / "01_roi_pool_vs_roi_align.ipynb", jupyter_dirs,
                          {"N_RANDOM_BOXES": 300})
    out = text_outputs(nb)
    assert "feature map: 25 x 18 (W x H)" in out
    assert "RoIPool reads columns 9..17, rows 7..12 = image box (288, 224, 576, 416)" in out
    assert "IoU with the object: 0.652" in out
    assert count_images(nb) >= 5


def make_ablation_results(out: Path) -> dict:
    """A results folder as `python -m detector.ablation` writes it, from made-up run records:
    six variants x strides 16, 32 x three seeds, with mask AP at stride 16."""
    from detector.ablation.results import write_results
    from detector.ablation.runs import RunDir, RunSpec
    from detector.ablation.variants import default_variants
    from detector.io import write_json

    variants = list(default_variants())  # the variant table's ablated ops, one per mode
    base = {"roi_pool": 0.20, "roi_warp": 0.21, "roi_align": 0.25, "prroi_pool": 0.255}
    specs = [RunSpec(v, stride, seed) for seed in range(3) for stride in (16, 32) for v in variants]
    for spec in specs:
        v = spec.variant
        ap = base[v.op] + 0.004 * spec.seed - (0.02 if spec.stride == 32 else 0.0)
        bbox = {k: ap * f for k, f in zip(["AP", "AP50", "AP75", "APs", "APm", "APl"], [1, 1.7, 0.9, 0.4, 1.1, 1.4])}
        rec = {"complete": True, "name": spec.name, "variant": v.name, "op": v.op, "mode": v.mode,
               "stride": spec.stride, "seed": spec.seed, "bbox": bbox,
               "segm": {k: 0.9 * x for k, x in bbox.items()} if spec.stride == 16 else None,
               "train_time_s": 600.0 + spec.seed, "infer_ms_per_image": 150.0, "roi_ms_per_image": 2.0 + 0.1 * spec.seed,
               "global_step": 1000, "train_attempts": 1, "num_images": 200, "checkpoint": "last.ckpt",
               "eval_time_s": 10.0, "finished_at": "2026-12-05T12:00:00", "train_command": ["train.py", "fit"],
               # the evidence the ablation keeps that the final checkpoint reached the schedule
               "verified": {"global_step": 1000, "expected_steps": 1000, "source": "detector_run"}}
        write_json(RunDir(out, spec).marker, rec)
    return write_results(out, specs, variants, [16, 32],
                         {"command": "python -m detector.ablation --config base.yaml --out abl --strides 16 32"})


def test_02_ablation_executes(jupyter_dirs):
    doc = make_ablation_results(jupyter_dirs / "abl")
    assert len(doc["summary"]) == 12 and len(doc["runs"]) == 36
    nb = execute_notebook(NOTEBOOKS / "02_ablation.ipynb", jupyter_dirs, {"RESULTS_DIR": str(jupyter_dirs / "abl")})
    out = text_outputs(nb)
    assert "36 completed runs, 12 variant x stride groups; missing: none" in out
    assert "| 32 | RoIAlign avg | 3 | 23.4 ± 0.4 |" in out  # (0.25 + 0.004 * seed - 0.02) x 100
    assert "| paper 2d (stride 32, box AP) | RoIAlign | 34.0 | 55.3 | 36.4 | +5.8 |" in out
    assert count_images(nb) >= 3


def test_02_ablation_says_what_to_run_without_results(jupyter_dirs):
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="python -m detector.ablation"):
        execute_notebook(NOTEBOOKS / "02_ablation.ipynb", jupyter_dirs, {"RESULTS_DIR": str(jupyter_dirs / "none")})


#: The mask branch on top of configs/tiny.yaml (the one tiny recipe), for notebook 03's masks.
MASK_BRANCH = ["--model.detector.mask", "true", "--model.detector.mask_head_layers", "[32, 32]",
               "--model.detector.mask_dim_reduced", "32", "--data.masks", "true"]


@pytest.fixture
def tiny_checkpoint(jupyter_dirs, monkeypatch):
    """A Mask R-CNN checkpoint after one training step of configs/tiny.yaml, written by the real
    train CLI (in-process)."""
    from detector.cli import main_train

    monkeypatch.setenv("DETECTOR_CACHE", str(jupyter_dirs / "cache"))
    main_train(["fit", "--config", str(REPO / "configs" / "tiny.yaml"), *MASK_BRANCH, "--trainer.max_steps", "1",
                "--trainer.logger", "false", "--trainer.limit_val_batches", "0",
                "--trainer.default_root_dir", str(jupyter_dirs / "run")])
    ckpts = sorted((jupyter_dirs / "run").rglob("last.ckpt"))
    assert ckpts, "train.py wrote no last.ckpt"
    return ckpts[0]


def test_03_predictions_executes(jupyter_dirs, tiny_checkpoint):
    nb = execute_notebook(NOTEBOOKS / "03_predictions.ipynb", jupyter_dirs,
                          {"CHECKPOINT": str(tiny_checkpoint), "NUM_IMAGES": 2, "SCORE_THRESH": 0.0})
    out = text_outputs(nb)
    assert "resnet18 stride 32, roi_op=roi_align (sampling_ratio=2, aligned=False, mode=avg), mask branch: True, step 1" in out
    assert "3 validation images; drawing 2" in out  # tiny.yaml: data.synthetic_val 3
    assert count_images(nb) == 1


def test_03_predictions_says_what_to_do_without_a_checkpoint(jupyter_dirs):
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="train one with"):
        execute_notebook(NOTEBOOKS / "03_predictions.ipynb", jupyter_dirs,
                         {"CHECKPOINT": str(jupyter_dirs / "missing.ckpt")})
