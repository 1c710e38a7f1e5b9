"""vl2spike_ros.vpr (no ROS imports)."""
