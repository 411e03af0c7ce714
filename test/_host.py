"""One "host" of test_two_hosts.py: the nodes of a deployment graph (robot_remote or
workstation) in ONE process, with the project's parameter files -- the nodes bring-up starts,
without a process per node (seconds of start-up each on the shared test machine). Relative
roots of the parameter files (nol_workspace/...) resolve against the working directory, which
the test makes the host's own folder.

    python test/_host.py robot|workstation NAMESPACE [-p name:=value ...]
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODES = {"robot": ["view_selection", "transfer", "recognizer"],
         "workstation": ["nol", "trainer", "transfer"]}
CLASSES = {"view_selection": "ViewSelectionNode", "transfer": "TransferNode",
           "recognizer": "RecognizerNode", "nol": "NolNode", "trainer": "TrainerNode"}


def main() -> int:
    import importlib

    from nol_ros.ros.runtime import run_nodes

    host, ns, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
    factories = [getattr(importlib.import_module(f"nol_ros.nodes.{n}_node"), CLASSES[n])
                 for n in NODES[host]]
    argv = ["_host", "--ros-args", "-r", f"__ns:={ns}"]
    for n in NODES[host]:
        argv += ["--params-file", str(ROOT / "config" / f"{n}.yaml")]
    argv += extra
    return run_nodes(factories, argv, threads=8)


if __name__ == "__main__":
    sys.exit(main())
