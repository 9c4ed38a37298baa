"""The layered configs resolve to exactly the settings stored in ``tests/configs/expected/``.

``configs/`` is layered (issue 13): ``base.yaml`` holds what the quickstart and the ablation
share and ``quickstart.yaml`` / ``ablation.yaml`` include it (``config: base.yaml``);
``backbones/sgd_1x.yaml`` holds what the six backbone x stride configs share and each
``backbones/<backbone>_s<stride>.yaml`` includes it; ``roi/*.yaml`` go on top of a backbone
file; ``tiny.yaml`` goes last on anything. A layer moves a setting from one file to another,
which must never change what a command trains: each case below is the fully resolved config
(``train.py fit --config ... --print_config``, every key with its default), compared with a
stored copy. The copies were first written from the unlayered files (commit 9eef09d), which the
layered files reproduced key for key (6752a3d); after the rename of the flat ``model.<field>``
keys to ``model.detector.<field>`` / ``roi_options`` (525c405) they were rewritten, identical to
the old ones modulo the rename (only ``trainer.enable_autolog_hparams`` changed, a CLI default
of that commit). So this is the proof that the layering changed nothing, and it stays the
guard: an edit that changes a command's settings fails here until the copy is rewritten on
purpose (``python tests/configs/test_layers.py --write``, then review its diff).
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
EXPECTED = Path(__file__).resolve().parent / "expected"

ROI_LAYERS = ("roi_pool", "roi_warp", "roi_align", "roi_align_max", "roi_align_aligned", "prroi_pool")
#: case name (= file name in expected/) -> the --config files of the command, in order.
CASES: dict[str, list[str]] = {
    "quickstart": ["configs/quickstart.yaml"],  # README: python train.py fit --config configs/quickstart.yaml
    "ablation": ["configs/ablation.yaml"],  # README: python -m detector.ablation --config configs/ablation.yaml
    **{f"{b}_s{s}": [f"configs/backbones/{b}_s{s}.yaml"] for b in ("vgg16", "resnet18", "resnet50") for s in (16, 32)},
    # train.py's docstring: python train.py fit --config configs/backbones/resnet18_s32.yaml --config configs/roi/roi_pool.yaml
    **{f"resnet18_s32+{r}": ["configs/backbones/resnet18_s32.yaml", f"configs/roi/{r}.yaml"] for r in ROI_LAYERS},
}


def resolved_text(config_files: list[str]) -> str:
    """``train.py fit --config F1 --config F2 ... --print_config`` (run in-process, from the repo root)."""
    from detector.cli import DetectorCLI

    args = ["fit", *(a for f in config_files for a in ("--config", str(REPO / f))), "--print_config"]
    out = io.StringIO()
    # (sys.argv is pytest's: LightningCLI warns when it sees both argv and args)
    with mock.patch.object(sys, "argv", ["train.py"]), contextlib.redirect_stdout(out), \
            pytest.raises(SystemExit) as exc:
        DetectorCLI(args=args)
    assert exc.value.code in (0, None), f"{config_files} did not parse (exit {exc.value.code})"
    return out.getvalue()


def differences(expected: object, got: object, key: str = "") -> list[str]:
    """Every dotted key whose value differs, is missing or is new, as readable lines."""
    if isinstance(expected, dict) and isinstance(got, dict):
        lines = []
        for k in list(expected) + [k for k in got if k not in expected]:
            sub = f"{key}.{k}" if key else str(k)
            if k not in got:
                lines.append(f"{sub}: missing (expected {expected[k]!r})")
            elif k not in expected:
                lines.append(f"{sub}: new key = {got[k]!r}")
            else:
                lines += differences(expected[k], got[k], sub)
        return lines
    return [] if expected == got else [f"{key}: expected {expected!r}, got {got!r}"]


@pytest.mark.parametrize("name", list(CASES))
def test_layered_config_resolves_to_the_stored_settings(name):
    expected = yaml.safe_load((EXPECTED / f"{name}.yaml").read_text())
    got = yaml.safe_load(resolved_text(CASES[name]))
    diff = differences(expected, got)
    assert not diff, (f"{' + '.join(CASES[name])} no longer resolves to tests/configs/expected/{name}.yaml:\n  "
                      + "\n  ".join(diff))


def test_every_stored_copy_has_a_case():
    assert {p.stem for p in EXPECTED.glob("*.yaml")} == set(CASES)


def including_files() -> list[Path]:
    return [p for p in sorted(CONFIGS.rglob("*.yaml")) if "config" in (yaml.safe_load(p.read_text()) or {})]


def test_includes_are_relative_and_their_keys_are_dotted():
    """A file that includes another (``config: base.yaml``) names its own settings with dotted
    keys (``trainer.max_epochs: 6``), never as a ``trainer:`` block: jsonargparse 4.53 lets a
    block in the including file replace the included file's whole section (every trainer key
    of base.yaml would silently fall back to its default), while a dotted key replaces one key."""
    files = including_files()
    assert {p.relative_to(CONFIGS).as_posix() for p in files} >= {"quickstart.yaml", "ablation.yaml",
                                                                  "backbones/resnet18_s32.yaml"}
    for path in files:
        raw = yaml.safe_load(path.read_text())
        assert (path.parent / raw["config"]).is_file(), f"{path}: config: {raw['config']} (relative to the file)"
        blocks = [k for k, v in raw.items() if k != "config" and isinstance(v, dict)]
        assert not blocks, f"{path}: write {blocks} as dotted keys (e.g. trainer.max_epochs: 6), not as blocks"


def test_a_block_next_to_an_include_would_drop_the_included_section(tmp_path):
    """Why the rule above exists (if jsonargparse starts merging blocks, the rule can go)."""
    (tmp_path / "child.yaml").write_text(f"config: {CONFIGS / 'base.yaml'}\ntrainer:\n  max_epochs: 2\n")
    (tmp_path / "dotted.yaml").write_text(f"config: {CONFIGS / 'base.yaml'}\ntrainer.max_epochs: 2\n")
    block = yaml.safe_load(resolved_text([str(tmp_path / "child.yaml")]))["trainer"]
    dotted = yaml.safe_load(resolved_text([str(tmp_path / "dotted.yaml")]))["trainer"]
    assert dotted["max_epochs"] == block["max_epochs"] == 2
    assert dotted["precision"] == "bf16-mixed"  # base.yaml's, kept
    assert block["precision"] != "bf16-mixed"  # base.yaml's trainer section dropped


def leaves(tree: dict, key: str = "") -> dict[str, object]:
    """``{"model.detector.min_size": 64, ...}``: every leaf of a nested mapping, by dotted key."""
    out: dict[str, object] = {}
    for k, v in tree.items():
        sub = f"{key}.{k}" if key else str(k)
        out.update(leaves(v, sub) if isinstance(v, dict) and v else {sub: v})
    return out


def test_tiny_layer_goes_on_its_own_or_on_top_of_any_config():
    tiny = leaves(yaml.safe_load((CONFIGS / "tiny.yaml").read_text()))
    for files in (["configs/tiny.yaml"], ["configs/quickstart.yaml", "configs/tiny.yaml"],
                  ["configs/backbones/vgg16_s32.yaml", "configs/roi/roi_pool.yaml", "configs/tiny.yaml"]):
        got = leaves(yaml.safe_load(resolved_text(files)))
        wrong = {k: (v, got.get(k)) for k, v in tiny.items() if got.get(k) != v}
        assert not wrong, f"{files}: the tiny layer, put last, must win: {wrong}"


def write_expected() -> None:
    """Rewrite every stored copy from the current configs (only for a deliberate change)."""
    EXPECTED.mkdir(exist_ok=True)
    for name, files in CASES.items():
        (EXPECTED / f"{name}.yaml").write_text(resolved_text(files))
        print(f"wrote {EXPECTED / name}.yaml")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/configs/test_layers.py --write   (rewrites tests/configs/expected/*.yaml)")
    sys.path.insert(0, str(REPO))
    write_expected()
