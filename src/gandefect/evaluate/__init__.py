"""Evaluation: the domain feature net, generator metrics, detection and repair metrics."""
