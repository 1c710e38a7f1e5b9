"""Datasets and frame sources (no ROS imports, nothing from train/)."""
