"""Entry point for Prefect deployments: `prefect deploy flows/retrain.py:retrain` or
`gandefect schedule`. The flow itself lives in gandefect.orchestrate."""

from gandefect.orchestrate import retrain

__all__ = ["retrain"]

if __name__ == "__main__":
    retrain()
