"""vl2spike_ros.models (no ROS imports)."""
