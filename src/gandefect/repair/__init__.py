"""Repairer: mask-conditioned inpainting and the detect -> mask -> inpaint -> re-score loop."""
