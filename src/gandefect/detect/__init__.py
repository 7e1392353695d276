"""Detectors of generated images behind one interface: `score` and `defect_map`."""
