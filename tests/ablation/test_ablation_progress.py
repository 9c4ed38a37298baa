"""detector.ablation.progress: is a checkpoint the end of its schedule? (issue 12, item 1)

Checkpoints are written here as plain dicts with the keys train.py / Lightning use, in both
forms the ablation meets: with train.py's ``detector_run`` record, and without it (older
checkpoints, judged by the run's config.yaml and Lightning's loop counters).
"""

import pytest
import torch

from detector.ablation.progress import stamp_problem, training_progress


def lightning_loops(epochs_started: int, epochs_processed: int, steps_this_epoch: int) -> dict:
    return {"fit_loop": {
        "epoch_progress": {"total": {"started": epochs_started, "processed": epochs_processed}},
        "epoch_loop.automatic_optimization.optim_progress": {
            "optimizer": {"step": {"current": {"completed": steps_this_epoch}}}}}}


def write(tmp_path, global_step, run_state=None, loops=None, config=None):
    ckpt = {"epoch": 0, "global_step": global_step, "state_dict": {}}
    if run_state is not None:
        ckpt["detector_run"] = run_state
    if loops is not None:
        ckpt["loops"] = loops
    if config is not None:
        (tmp_path / "config.yaml").write_text(config)
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir(exist_ok=True)
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("state, complete, says", [
    ({"finished": False, "global_step": 2, "expected_steps": 6}, False, "step 2 of 6 (not finished"),
    ({"finished": True, "global_step": 6, "expected_steps": 6}, True, "step 6 of 6 (finished"),
    ({"finished": True, "global_step": 5, "expected_steps": 6}, False, "step 5 of 6 (finished"),
    ({"finished": "yes", "global_step": 6, "expected_steps": 6}, False, ""),  # only True is finished
])
def test_train_py_run_record(tmp_path, state, complete, says):
    p = training_progress(write(tmp_path, state["global_step"], run_state=state), tmp_path)
    assert p.complete is complete and says in p.describe()


EPOCHS3 = "trainer:\n  max_epochs: 3\n  max_steps: -1\n"
STEPS6 = "trainer:\n  max_epochs: null\n  max_steps: 6\n"


@pytest.mark.parametrize("step, loops, config, complete, expected", [
    (6, lightning_loops(3, 3, 2), EPOCHS3, True, 6),  # ended after its third epoch of 2 steps
    (4, lightning_loops(2, 2, 2), EPOCHS3, False, 6),  # stopped at the end of epoch 2 (SIGTERM there)
    (5, lightning_loops(3, 2, 1), EPOCHS3, False, 6),  # stopped mid-epoch 3
    (6, lightning_loops(4, 3, 0), STEPS6, True, 6),  # max_steps reached mid-epoch
    (2, lightning_loops(1, 0, 2), STEPS6, False, 6),  # 2 of 6 steps, mid-epoch
])
def test_checkpoint_without_run_record_is_judged_by_the_schedule(tmp_path, step, loops, config, complete, expected):
    p = training_progress(write(tmp_path, step, loops=loops, config=config), tmp_path)
    assert (p.complete, p.expected_steps, p.global_step, p.source) == (complete, expected, step, "config.yaml")


@pytest.mark.parametrize("loops, config, problem", [
    (lightning_loops(3, 3, 2), None, "no train.py config.yaml"),
    (None, EPOCHS3, "no Lightning loop counters"),
    (lightning_loops(3, 3, 2), "trainer:\n  max_epochs: three\n", "not integers"),
    (lightning_loops(3, 3, 2), "trainer: [unclosed\n", "cannot read the schedule"),
])
def test_what_cannot_be_judged_is_not_finished(tmp_path, loops, config, problem):
    p = training_progress(write(tmp_path, 6, loops=loops, config=config), tmp_path)
    assert not p.complete and problem in p.problem and "cannot tell" in p.describe()


def test_unreadable_checkpoint_is_a_problem_not_an_exception(tmp_path):
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert "not a checkpoint that loads safely" in training_progress(bad, tmp_path).problem
    assert "does not exist" in training_progress(tmp_path / "gone.ckpt", tmp_path).problem


def test_stamp_is_evidence_only_when_steps_match():
    assert stamp_problem({"global_step": 6, "expected_steps": 6, "source": "detector_run"}, 6) is None
    assert "not the schedule's 6" in stamp_problem({"global_step": 2, "expected_steps": 6, "source": "x"}, 2)
    assert "differs" in stamp_problem({"global_step": 6, "expected_steps": 6, "source": "x"}, 5)
    assert "integer" in stamp_problem({"global_step": "6", "expected_steps": 6, "source": "x"}, 6)
    assert "not an object" in stamp_problem(None, 6)
