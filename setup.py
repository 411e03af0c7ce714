"""pip install for nol_ros (the venv path). A real ROS 2 install uses CMakeLists.txt + colcon.

The generated interfaces are not built here: tools/setup.sh builds them with CMake into the
same environment first.
"""

from glob import glob

from setuptools import find_packages, setup

# The ROS executables (`ros2 run nol_ros NAME` with colcon; console scripts here). The same
# list is in CMakeLists.txt (NOL_ROS_EXECUTABLES); test/test_launch_files.py checks both.
NODES = {
    "reconstruction_node": "nol_ros.nodes.reconstruction_node:main",
    "nol_node": "nol_ros.nodes.nol_node:main",
    "view_selection_node": "nol_ros.nodes.view_selection_node:main",
    "trainer_node": "nol_ros.nodes.trainer_node:main",
    "recognizer_node": "nol_ros.nodes.recognizer_node:main",
    "transfer_node": "nol_ros.nodes.transfer_node:main",
    "bag_replay": "nol_ros.commands.bag:replay_main",
}

setup(
    name="nol_ros",
    version="0.1.0",
    description="Neural Object Learning for ROS 2 (CPU-first)",
    packages=find_packages(include=["nol_ros", "nol_ros.*"]),
    package_data={"nol_ros": ["models/*.pt", "models/*.json", "ros/*.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/nol_ros"]),
        ("share/nol_ros", ["package.xml"]),
        ("share/nol_ros/launch", glob("launch/*.launch.py")),
        ("share/nol_ros/config", glob("config/*.yaml")),
        ("share/nol_ros/config/bringup", glob("config/bringup/*.yaml")),
    ],
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "nol-ros = nol_ros.cli:main",
            *[f"{name} = {target}" for name, target in NODES.items()],
        ],
    },
)
