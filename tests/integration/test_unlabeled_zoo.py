"""An unlabeled folder of colour images goes through the GAN zoo (tiny profile): the label-free
feature space is trained, the metrics that need labels are absent, and the report says why."""

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import make_project, run_cli
from tests.photo_folder import make_photo_folder

pytestmark = pytest.mark.slow


@pytest.fixture
def rgb_project(tmp_path):
    return make_project(tmp_path / "project", data={"image_size": 32, "mode": "RGB"})


def test_an_unlabeled_rgb_folder_trains_the_zoo_in_the_label_free_space(rgb_project, tmp_path):
    folder = make_photo_folder(tmp_path / "shots", 160)
    ingested = run_cli(rgb_project, "ingest", "--from", str(folder))
    assert ingested.returncode == 0, ingested.stderr
    zoo = run_cli(rgb_project, "train-gans", "--loss", "hinge", "--loss", "vae")
    assert zoo.returncode == 0, zoo.stdout + zoo.stderr
    assert "feature space contrastive" in zoo.stdout
    report = (rgb_project / "reports" / "gan-zoo.md").read_text()
    assert "label-free feature space" in report and "Class entropy and the confident rate are absent" in report
    assert "class_entropy_ratio" not in report.split("\n| loss")[1]  # not a column of the table
    client = MlflowClient(tracking_uri=f"sqlite:///{rgb_project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("gandefect-gans").experiment_id],
                              "tags.mlflow.runName = 'gan-hinge'")
    assert runs and runs[0].data.params["feature_space"] == "contrastive"
    assert "fid" in runs[0].data.metrics and "class_entropy" not in runs[0].data.metrics
    features = client.search_model_versions("name = 'gandefect-features'")
    assert features and all(v.tags["feature_space"] == "contrastive" for v in features)
