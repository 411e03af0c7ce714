"""The workstation's half of a robot + workstation deployment (docs/deployment.md): nol (renders
the training sets of the objects the robot learnt), trainer, transfer (receives the robot's
packages, serves the models folder back), for a real ROS 2 install:

    ros2 launch nol_ros workstation.launch.py namespace:=workstation

The same graph as config/bringup/workstation.yaml (`nol-ros bringup --config workstation` in a
pip install); parameters come from the package's config/*.yaml, the files bring-up passes too.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    config = os.path.join(get_package_share_directory("nol_ros"), "config")
    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="wall-clock time"),
        Node(package="nol_ros", executable="nol_node", name="nol",
             namespace=LaunchConfiguration("namespace"), output="screen",
             parameters=[os.path.join(config, "nol.yaml"),
                         {"use_sim_time": LaunchConfiguration("use_sim_time")}]),
        Node(package="nol_ros", executable="trainer_node", name="trainer",
             namespace=LaunchConfiguration("namespace"), output="screen",
             parameters=[os.path.join(config, "trainer.yaml"),
                         {"use_sim_time": LaunchConfiguration("use_sim_time")}]),
        Node(package="nol_ros", executable="transfer_node", name="transfer",
             namespace=LaunchConfiguration("namespace"), output="screen",
             parameters=[os.path.join(config, "transfer.yaml"),
                         {"use_sim_time": LaunchConfiguration("use_sim_time")}]),
    ])
