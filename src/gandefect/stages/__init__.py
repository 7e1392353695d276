"""The lifecycle stages: one implementation each, called by the CLI, DVC and Prefect."""

from gandefect.stages.ingest import INGEST_STAGE, IngestSummary, run_ingest, validate_snapshot

__all__ = ["INGEST_STAGE", "IngestSummary", "run_ingest", "validate_snapshot"]
