"""ament_python package setup for vl2spike_ros."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vl2spike_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["assets/*", "assets/**/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.*")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/config/distill", glob("config/distill/*.yaml")),
        (f"share/{PACKAGE}/config/vpr", glob("config/vpr/*.yaml") + glob("config/vpr/*.json")),
        # sh wrappers of the console scripts (which stay in lib/vl2spike_ros for `ros2 run`):
        # a bin/ folder makes colcon's setup.bash put them on PATH
        ("bin", ["bin/vl2spike", "bin/vpr_node"]),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="vl2spike_ros maintainers",
    maintainer_email="maintainers@vl2spike-ros.invalid",
    description="Spikformer place recognition for ROS 2, distilled from a vision-language model.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "vl2spike = vl2spike_ros.cli:main",
            "vpr_node = vl2spike_ros.ros.node:main",
        ],
    },
)
