"""I/O with the lifecycle tools: MLflow tracking, DVC versioning, Great Expectations gates."""
