"""Two "hosts" on one machine: two network namespaces joined by a veth pair, each with only
loopback and its end of the link (root needed). What test/test_two_hosts.py and
bench/bench_two_hosts.py run the robot and the workstation in.

    sudo python tools/netns_hosts.py up demo      # namespaces nolr_demo, nolw_demo
    sudo ip netns exec nolr_demo env $(python tools/netns_hosts.py env demo robot) nol-ros ...
    sudo python tools/netns_hosts.py down demo

DDS across the pair (what ``env()`` gives a process in a namespace): discovery over the
subnet with the other host as a static peer (unicast, so no multicast route is needed), the
UDPv4 transport only (Fast DDS would otherwise also offer shared memory, a path between the
two namespaces that does not cross the link), and one ROS domain for both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass


class NetnsUnavailable(RuntimeError):
    """The kernel or the user's rights do not allow network namespaces here."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {p.stderr.strip()}")
    return p


@dataclass
class TwoHosts:
    """Namespaces ``nolr_TAG`` (robot) and ``nolw_TAG`` (workstation), veth ``vr_TAG`` /
    ``vw_TAG``, addresses 10.213.NET.1 (robot) and .2 (workstation)."""

    tag: str
    net: int = 77
    domain_id: int = 77

    @property
    def ns(self) -> dict[str, str]:
        return {"robot": f"nolr_{self.tag}", "workstation": f"nolw_{self.tag}"}

    @property
    def dev(self) -> dict[str, str]:
        return {"robot": f"vr_{self.tag}"[:15], "workstation": f"vw_{self.tag}"[:15]}

    @property
    def addr(self) -> dict[str, str]:
        return {"robot": f"10.213.{self.net}.1", "workstation": f"10.213.{self.net}.2"}

    def peer(self, host: str) -> str:
        return "workstation" if host == "robot" else "robot"

    # -- life cycle ------------------------------------------------------------------------
    def up(self) -> TwoHosts:
        """Create both namespaces and the link (NetnsUnavailable when the kernel refuses)."""
        if os.geteuid() != 0:
            raise NetnsUnavailable("network namespaces need root (this process runs as uid "
                                   f"{os.geteuid()})")
        self.down()
        p = _ip("netns", "add", self.ns["robot"], check=False)
        if p.returncode != 0:
            raise NetnsUnavailable(f"the kernel refuses network namespaces: {p.stderr.strip()}")
        try:
            _ip("netns", "add", self.ns["workstation"])
            p = _ip("link", "add", self.dev["robot"], "type", "veth", "peer", "name",
                    self.dev["workstation"], check=False)
            if p.returncode != 0:
                raise NetnsUnavailable(f"the kernel refuses veth pairs: {p.stderr.strip()}")
            for h in ("robot", "workstation"):
                _ip("link", "set", self.dev[h], "netns", self.ns[h])
                _ip("-n", self.ns[h], "addr", "add", f"{self.addr[h]}/24", "dev", self.dev[h])
                _ip("-n", self.ns[h], "link", "set", "lo", "up")
                _ip("-n", self.ns[h], "link", "set", self.dev[h], "up")
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Delete both namespaces (their veth ends go with them); quiet when absent."""
        for h in ("robot", "workstation"):
            _ip("netns", "del", self.ns[h], check=False)

    def link(self, up: bool) -> None:
        """Cut (False) or restore (True) the link: the robot's end goes down / up."""
        _ip("-n", self.ns["robot"], "link", "set", self.dev["robot"], "up" if up else "down")
        if up:  # wait for carrier on both ends
            t0 = time.monotonic()
            while time.monotonic() - t0 < 30:
                if all("LOWER_UP" in _ip("-n", self.ns[h], "link", "show",
                                         self.dev[h]).stdout for h in self.ns):
                    return
                time.sleep(0.05)

    # -- inspection ------------------------------------------------------------------------
    def counters(self, host: str) -> dict[str, int]:
        """rx/tx bytes and packets of the host's end of the link."""
        out = json.loads(_ip("-n", self.ns[host], "-s", "-j", "link", "show",
                             self.dev[host]).stdout)[0]["stats64"]
        return {"rx_bytes": out["rx"]["bytes"], "tx_bytes": out["tx"]["bytes"],
                "rx_packets": out["rx"]["packets"], "tx_packets": out["tx"]["packets"]}

    def interfaces(self, host: str) -> list[str]:
        """Every network interface in the host's namespace."""
        return sorted(d["ifname"] for d in json.loads(
            _ip("-n", self.ns[host], "-j", "link", "show").stdout))

    # -- processes ---------------------------------------------------------------------------
    def env(self, host: str, base: dict | None = None) -> dict[str, str]:
        """Environment of a ROS process on ``host``: DDS over the link to the other host."""
        e = dict(os.environ if base is None else base)
        e.update({"ROS_DOMAIN_ID": str(self.domain_id),
                  "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET",
                  "ROS_STATIC_PEERS": self.addr[self.peer(host)],
                  "FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"})
        return e

    def popen(self, host: str, cmd: list[str], env: dict | None = None, **kw):
        """Start ``cmd`` inside the host's namespace (ip netns exec)."""
        return subprocess.Popen(["ip", "netns", "exec", self.ns[host], *cmd],
                                env=self.env(host, env), **kw)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] not in ("up", "down", "env"):
        print(__doc__)
        return 2
    h = TwoHosts(argv[1])
    if argv[0] == "up":
        h.up()
        print(json.dumps({"namespaces": h.ns, "addresses": h.addr}))
    elif argv[0] == "down":
        h.down()
    else:
        e = h.env(argv[2], {})
        print(" ".join(f"{k}={v}" for k, v in e.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
