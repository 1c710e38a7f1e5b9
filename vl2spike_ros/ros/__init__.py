"""ROS 2 integration: the only subpackage that imports rclpy."""
