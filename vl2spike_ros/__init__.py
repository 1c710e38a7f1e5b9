"""vl2spike_ros: Spikformer visual place recognition distilled from a vision-language model.

Everything except :mod:`vl2spike_ros.ros` imports without ROS 2.
"""
__version__ = "0.1.0"
