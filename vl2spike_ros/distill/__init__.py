"""vl2spike_ros.distill (no ROS imports)."""
