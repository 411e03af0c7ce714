"""``nol-ros remote-learn`` and ``nol-ros fetch``: the robot + workstation deployment from the
command line (docs/deployment.md). Both are ROS clients of nodes that must be running
(graphs robot_remote and workstation); they print JSON on stdout."""

from __future__ import annotations

import json

from nol_ros.commands._common import EXIT_FAILED, EXIT_OK, add_command, init_ros
from nol_ros.workspace import MODELS_DIR

ORDER = 40


def run_remote_learn(args) -> int:
    # lazy: CLI start-up (nol-ros --help imports every command module)
    from nol_ros.ros.client import NolClient
    from nol_ros.ros.remote import RemoteLearnConfig, RemoteLearner

    cfg = RemoteLearnConfig(robot_ns=args.robot_ns, workstation_ns=args.workstation_ns,
                            shared_workspace=args.shared_workspace, models_path=args.models_path,
                            preset=args.preset, train_options_yaml=args.train_options,
                            learn_options_yaml=args.learn_options,
                            job_timeout_s=args.job_timeout)
    node = init_ros(args.ros_args, "remote_learn")
    robot = NolClient(node, namespace=cfg.robot_ns)                     # spins the node
    workstation = NolClient(node, namespace=cfg.workstation_ns, spin=False)
    try:
        out = RemoteLearner(robot, workstation, cfg).learn(args.name, args.mesh, args.sequence,
                                                           args.package)
    finally:
        robot.destroy()                  # stops the spinning first
        workstation.destroy()
        node.destroy_node()
    print(json.dumps(out), flush=True)
    return EXIT_OK


def run_fetch(args) -> int:
    """Ask a transfer node to fetch; print its TransferStatus as JSON lines until the job ends
    (what a caller paces itself by)."""
    # lazy: CLI start-up (nol-ros --help imports every command module)
    from nol_ros.ros.client import NolClient, transfer_dict

    ns, _, name = args.node.rstrip("/").rpartition("/")
    node = init_ros(args.ros_args, "fetch_client")
    nol = NolClient(node, namespace=ns, names={"transfer": name or "transfer"})
    try:
        nol.wait_for_nodes(["transfer"], args.wait)
        job = nol.fetch(args.peer, args.remote, args.local, args.max_chunks)

        def show(m):
            if not args.quiet:
                print(json.dumps({"job_id": job.job_id, **transfer_dict(m),
                                  "message": m.message}), flush=True)

        res = nol.wait(job, None, on_transfer=show)
        last = nol.transfer_status(job, 30.0)
        print(json.dumps({"job_id": job.job_id, "job_state": int(res.state),
                          "result_path": res.result_path, "error_code": res.status.error_code,
                          "message": res.status.message, "final": True, **transfer_dict(last)}),
              flush=True)
        return EXIT_OK if res.succeeded else EXIT_FAILED
    finally:
        nol.destroy()
        node.destroy_node()


def register(sub) -> None:
    p = add_command(
        sub, "remote-learn", "learn an object with a robot and a workstation over ROS 2",
        "Run the two-machine chain as a client of the running nodes: view selection on the "
        "robot (its package), the package sent to the workstation (transfer nodes), the "
        "training set rendered and the recognisers trained there, the models sent back to the "
        "robot. Prints a JSON summary (paths, transfer figures, seconds per step). Start the "
        "graphs robot_remote and workstation first (docs/deployment.md).",
        ["nol-ros remote-learn mug --mesh /data/mug.ply --robot-ns /robot "
         "--workstation-ns /workstation",
         "nol-ros remote-learn mug --mesh /data/mug.ply --sequence /data/seq --preset tiny "
         "--shared-workspace"],
        run_remote_learn)
    p.add_argument("name")
    p.add_argument("--mesh", default="", help="the object's mesh on the robot (PLY/OBJ, m); "
                   "empty: the view_selection node's objects parameters")
    p.add_argument("--sequence", default="", help="a BOP scene on the robot; empty: the "
                   "reconstruction node's buffer")
    p.add_argument("--package", default="", help="a package view selection wrote already "
                   "(a robot path): start at the transfer")
    p.add_argument("--robot-ns", default="/robot")
    p.add_argument("--workstation-ns", default="/workstation")
    p.add_argument("--shared-workspace", action="store_true",
                   help="both hosts see one file system: no transfers")
    p.add_argument("--models-path", default=MODELS_DIR,
                   help="where the models land under the robot's transfer root")
    p.add_argument("--preset", default="", help="training preset (default: the trainer's)")
    p.add_argument("--train-options", default="", metavar="YAML")
    p.add_argument("--learn-options", default="", metavar="YAML",
                   help="LearnObject options, e.g. '{render.preset: tiny}'")
    p.add_argument("--job-timeout", type=float, default=7200.0, metavar="S")

    f = add_command(
        sub, "fetch", "ask a transfer node to fetch a folder from another one",
        "The transfer node NODE pulls REMOTE (a folder under the peer's transfer root) into "
        "LOCAL (under its own root), chunked, checksummed and resumable; prints the "
        "transfer's status as JSON lines until the job ends (the last line has final: true).",
        ["nol-ros fetch /workstation/transfer /robot/transfer view_selection/1/packages/mug mug",
         "nol-ros fetch /robot/transfer /workstation/transfer _models _models --max-chunks 10"],
        run_fetch)
    f.add_argument("node", help="the receiving transfer node, e.g. /workstation/transfer")
    f.add_argument("peer", help="the sending transfer node, e.g. /robot/transfer")
    f.add_argument("remote")
    f.add_argument("local")
    f.add_argument("--max-chunks", type=int, default=0,
                   help="stop after this many new chunks (resumable; 0 = all)")
    f.add_argument("--wait", type=float, default=60.0, metavar="S",
                   help="how long to wait for the node's service to appear")
    f.add_argument("--quiet", action="store_true", help="only the final line")

