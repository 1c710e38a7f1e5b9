"""ROS test harness, demo, fixtures and load bench (imports rclpy)."""
