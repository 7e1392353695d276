"""Real images: sources, the PNG encoding path, content-hash splits and snapshots."""
