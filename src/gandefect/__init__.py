"""gandefect: detect, localize and repair defects in GAN-generated images."""

import os

__version__ = "0.1.0"

# The service runs on machines with no network beyond package registries: keep every
# library of the stack from phoning home. setdefault so an operator can still opt in.
for _key, _value in {
    "GX_ANALYTICS_ENABLED": "False",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "BENTOML_DO_NOT_TRACK": "True",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}.items():
    os.environ.setdefault(_key, _value)
