"""A run folder holds one run: training into a folder that already holds one is refused unless the
run is resumed (train.resume) or replaced (train.overwrite); a resumed run's metrics read as one run's."""

import json

import pytest

import mmcl
from mmcl.errors import ConfigError
from mmcl.recipe import recipe_from_dict

from ..conftest import tiny_recipe_dict


def recipe(corpus, out, **train):
    d = tiny_recipe_dict(corpus, out, **train)
    d["eval"]["datasets"] = []
    return recipe_from_dict(d)


def logged_steps(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_second_run_into_the_same_folder_is_refused_then_resumed_or_overwritten(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    mmcl.Trainer(recipe(tiny_corpus, out, steps=2)).fit()
    with pytest.raises(ConfigError, match="already holds a run .* train.resume=latest, .* train.overwrite=true"):
        mmcl.Trainer(recipe(tiny_corpus, out, steps=2))
    assert logged_steps(out) == [1, 2]  # nothing was appended
    mmcl.Trainer(recipe(tiny_corpus, out, steps=4, resume="latest")).fit()
    assert logged_steps(out) == [1, 2, 3, 4]
    mmcl.Trainer(recipe(tiny_corpus, out, steps=1, overwrite=True)).fit()
    assert logged_steps(out) == [1]
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-0000001"]


def test_resume_forgets_the_metrics_of_steps_it_redoes(tiny_corpus, tmp_path):
    """Stopped at step 3 with a checkpoint at step 2: step 3 is trained again after the resume, and
    metrics.jsonl keeps one line per step."""
    out = tmp_path / "run"
    mmcl.Trainer(recipe(tiny_corpus, out, steps=4, stop_at_step=3)).fit()  # checkpoints at 2 and 3
    (out / "checkpoints" / "latest").write_text("step-0000002\n")  # as if killed before step 3's save
    mmcl.Trainer(recipe(tiny_corpus, out, steps=4, resume="latest")).fit()
    assert logged_steps(out) == [1, 2, 3, 4]
