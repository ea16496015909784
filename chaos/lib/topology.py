"""Where chaos nodes live: one network namespace per node on a bridge (real hosts as far as
the network is concerned), or loopback addresses when namespaces are not available."""
import os
import subprocess

BRIDGE = "cchaos0"
NS_PREFIX = "cchaos-"
VETH_PREFIX = "cch-"
SUBNET = "10.213.0"
PORT = 7400


def sh(*argv, check=True, quiet=False):
    """Runs a command; failures name the command and its stderr."""
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def netns_available():
    if os.geteuid() != 0:
        return False, "not root"
    probe = NS_PREFIX + "probe"
    r = sh("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return False, r.stderr.strip()
    sh("ip", "netns", "del", probe, check=False)
    return True, ""


class NetnsTopology:
    """Node i (1-based) is namespace cchaos-nI with eth0 = 10.213.0.(10+i) on bridge cchaos0;
    the harness itself (workload, checks) sits on the bridge at 10.213.0.1."""
    kind = "netns"
    network_faults = True

    def __init__(self, ids):
        self.ids = ids

    def ns(self, node_id):
        return NS_PREFIX + node_id

    def veth(self, node_id):
        return VETH_PREFIX + node_id

    def ip(self, node_id):
        return f"{SUBNET}.{10 + self.ids.index(node_id) + 1}"

    def address(self, node_id):
        return f"{self.ip(node_id)}:{PORT}"

    def wrap(self, node_id, argv):
        return ["ip", "netns", "exec", self.ns(node_id)] + argv

    def setup(self):
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        for n in self.ids:
            sh("ip", "netns", "add", self.ns(n))
            sh("ip", "link", "add", self.veth(n), "type", "veth", "peer", "name", "eth0", "netns", self.ns(n))
            sh("ip", "link", "set", self.veth(n), "master", BRIDGE, "up")
            sh(*self.wrap(n, ["ip", "addr", "add", f"{self.ip(n)}/24", "dev", "eth0"]))
            sh(*self.wrap(n, ["ip", "link", "set", "eth0", "up"]))
            sh(*self.wrap(n, ["ip", "link", "set", "lo", "up"]))

    def teardown(self):
        teardown_network()


class LoopbackTopology:
    """Node i listens on 127.0.0.(10+i): process, disk and clock faults work; network faults
    do not (connections between loopback addresses cannot be told apart by source)."""
    kind = "loopback"
    network_faults = False

    def __init__(self, ids):
        self.ids = ids

    def address(self, node_id):
        return f"127.0.0.{10 + self.ids.index(node_id) + 1}:{PORT}"

    def ip(self, node_id):
        return self.address(node_id).split(":")[0]

    def wrap(self, node_id, argv):
        return argv

    def setup(self):
        pass

    def teardown(self):
        pass


def teardown_network():
    """Removes every namespace, veth, bridge and rule table the harness may have made."""
    sh("nft", "delete", "table", "bridge", "cairn_chaos", check=False)
    listed = sh("ip", "netns", "list", check=False).stdout.split()
    for name in listed:
        if name.startswith(NS_PREFIX):
            sh("ip", "netns", "del", name, check=False)
    links = sh("ip", "-o", "link", "show", check=False).stdout.splitlines()
    for line in links:
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(VETH_PREFIX) or name == BRIDGE:
            sh("ip", "link", "del", name, check=False)
