"""vl2spike_ros.train (no ROS imports)."""
