"""The synthetic SMOT-like world: procedural textured objects on a table in a cluttered room,
an Xtion-like sensor, robot trajectories, written as BOP scenes + a rosbag2."""
