"""vl2spike_ros.io (no ROS imports)."""
