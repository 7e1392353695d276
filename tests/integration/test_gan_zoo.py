"""The GAN zoo on the tiny profile: what the session's flow tracked and registered for every member,
and `gandefect train-gans` end to end (the zoo's report, a clear error, resume after a kill)."""

import os
import signal
import time

import mlflow
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli, start_cli, write_params
from tests.integration.conftest import FAMILIES, LOSSES

pytestmark = pytest.mark.slow


def _client(project):
    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def test_every_zoo_member_is_tracked_registered_and_reported(trained):
    """The session's zoo (the flow's GAN tasks on Dask): one run per member under the flow's run."""
    root = trained.root
    client = _client(root)
    exp = client.get_experiment_by_name("gandefect-gans")
    runs = {r.data.tags["mlflow.runName"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {f"gan-{n}" for n in LOSSES + FAMILIES} | {"feature-net"}  # each once: cached after
    retrain = client.get_experiment_by_name("gandefect-retrain")
    (parent,) = client.search_runs([retrain.experiment_id], "params.stages = 'ingest,gans'")
    version = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["ingest"]["outs"][0]["md5"]
    for name in LOSSES:
        run = runs[f"gan-{name}"]
        assert run.data.tags["data_version"] == version and run.data.tags["git_commit"]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["loss"] == name and "fid" in run.data.metrics
        history = client.get_metric_history(run.info.run_id, "d_loss")
        assert len(history) == run.data.metrics["steps"]  # one point per step
        assert client.get_metric_history(run.info.run_id, "g_loss")
        arts = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
        assert "samples/final.png" in arts and any("epoch_" in a for a in arts)
    assert "gradient_penalty" in runs["gan-wgan-gp"].data.metrics
    assert "wasserstein_estimate" in runs["gan-wgan"].data.metrics
    zoo = {a.path for a in client.list_artifacts(parent.info.run_id, "zoo")}
    assert "zoo/gan-zoo.md" in zoo
    table = (root / "reports" / "gan-zoo.md").read_text()
    assert all(f"| {name} " in table for name in LOSSES + FAMILIES), table

    # The registered generator loads without the training code path and takes any batch size.
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    versions = client.search_model_versions("name = 'gandefect-generator-hinge'")
    assert len(versions) == 1 and versions[0].tags["data_version"] == version
    model = mlflow.pytorch.load_model("models:/gandefect-generator-hinge/1")
    for batch in (1, 5, 37):
        with torch.no_grad():
            assert model(torch.randn(batch, 64)).shape == (batch, 1, 28, 28)


def test_unknown_loss_is_a_clear_error(tmp_path):
    write_params(tmp_path)  # names are checked before any data is read
    proc = run_cli(tmp_path, "train-gans", "--loss", "bogus")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown generator 'bogus': neither a loss nor a family" in proc.stderr
    assert "wgan-gp" in proc.stderr and "resizegan" in proc.stderr  # the known names, both kinds


def test_a_killed_training_resumes_from_its_checkpoint_with_the_same_total_steps(project):
    """`gandefect train-gans` on a fresh project: one GAN, SIGKILLed, resumed; its run, the zoo's
    report and the train-gans run it is nested under."""
    ingested = project
    run_cli(ingested, "ingest", check=True)
    params = yaml.safe_load((ingested / "params.yaml").read_text())
    params["profiles"]["tiny"]["gan"].update(generator_steps=150, checkpoint_every=10)
    (ingested / "params.yaml").write_text(yaml.safe_dump(params))
    ckpt = ingested / "models" / "gans" / "nonsaturating" / "checkpoint.pt"
    proc = start_cli(
        ingested,
        "train-gans",
        "--loss",
        "nonsaturating",
        env=dict(os.environ),
        log=ingested.parent / "killed-train-gans.log",
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=False)["step"] >= 30:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpt, weights_only=False)["step"]
    assert 30 <= killed_at < 150

    proc = run_cli(ingested, "train-gans", "--loss", "nonsaturating", "--resume", check=True)
    assert "GAN zoo" in proc.stdout and "nonsaturating" in proc.stdout
    client = _client(ingested)
    exp = client.get_experiment_by_name("gandefect-gans")
    runs = client.search_runs([exp.experiment_id], "tags.mlflow.runName = 'gan-nonsaturating'")
    assert len(runs) == 1  # the resumed run continued the killed one
    run = runs[0]
    parents = {r.info.run_id for r in client.search_runs([exp.experiment_id], "tags.mlflow.runName = 'train-gans'")}
    # nested under the killed command's train-gans run, where it began; the resumed command has its own
    assert run.data.tags["mlflow.parentRunId"] in parents and len(parents) == 2
    resumed_parent = client.search_runs(
        [exp.experiment_id], "tags.mlflow.runName = 'train-gans'", order_by=["attributes.start_time DESC"]
    )[0]
    assert "zoo/gan-zoo.md" in {a.path for a in client.list_artifacts(resumed_parent.info.run_id, "zoo")}
    assert run.data.metrics["steps"] == 150 and run.data.metrics["generator_steps"] == 150
    assert run.data.metrics["resumed_from_step"] == killed_at
    assert torch.load(ckpt, weights_only=False)["step"] == 150
