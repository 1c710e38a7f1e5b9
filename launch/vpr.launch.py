"""Spiking visual place recognition node (same arguments as vpr.launch.xml).

    ros2 launch vl2spike_ros vpr.launch.py map:=/path/to/map image_topic:=/camera/image_raw
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

ARGUMENTS = [
    ("weights", "", "Student weights (.safetensors); empty: packaged default weights"),
    ("map", "", "Place map folder (FAISS index + JSON metadata)"),
    ("image_topic", "/camera/image_raw",
     "Camera topic (sensor_msgs/Image or, with compressed:=true, sensor_msgs/CompressedImage)"),
    ("compressed", "false", "Subscribe to sensor_msgs/CompressedImage"),
    ("params_file",
     os.path.join(get_package_share_directory("vl2spike_ros"), "config", "vpr_node.yaml"),
     "ROS 2 parameters file for vpr_node"),
    ("namespace", "", "Namespace of the node and its topics"),
    ("log_level", "info", "Logging level"),
]


def generate_launch_description():
    cfg = {name: LaunchConfiguration(name) for name, _, _ in ARGUMENTS}
    node = Node(
        package="vl2spike_ros",
        executable="vpr_node",
        name="vpr_node",
        namespace=cfg["namespace"],
        output="screen",
        arguments=["--ros-args", "--log-level", cfg["log_level"]],
        parameters=[
            cfg["params_file"],
            {
                "weights": ParameterValue(cfg["weights"], value_type=str),
                "map_dir": ParameterValue(cfg["map"], value_type=str),
                "image_topic": ParameterValue(cfg["image_topic"], value_type=str),
                "compressed_input": ParameterValue(cfg["compressed"], value_type=bool),
            },
        ],
    )
    args = [DeclareLaunchArgument(n, default_value=d, description=desc) for n, d, desc in ARGUMENTS]
    return LaunchDescription(args + [node])
