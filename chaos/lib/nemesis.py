"""Faults, each with start() and stop(). Network faults act on the bridge (nftables, bridge
family: partitions, one-way cuts, loss), inside a node's namespace (an iptables NFQUEUE rule
feeding the delayer: delay and jitter), or on its veth pair (tbf: bandwidth). This kernel has
no netem and its nftables lacks the queue expression; the xt NFQUEUE target works."""
import os
import random
import signal
import subprocess
import threading
import time

from topology import sh, NS_PREFIX

HERE = os.path.dirname(os.path.abspath(__file__))


class NetRules:
    """The bridge's drop rules of every active fault, rewritten atomically on each change."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_fault = {}

    def set(self, key, rules):
        with self.lock:
            if rules:
                self.by_fault[key] = rules
            else:
                self.by_fault.pop(key, None)
            body = "\n".join(r for rs in self.by_fault.values() for r in rs)
            script = ("add table bridge cairn_chaos\ndelete table bridge cairn_chaos\n"
                      "table bridge cairn_chaos {\n chain links {\n"
                      "  type filter hook forward priority 0; policy accept;\n" + body + "\n }\n}\n")
            r = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"nft: {r.stderr.strip()}")


class Fault:
    needs_network = False

    def __init__(self, spec, cluster, net, rng):
        self.spec = spec
        self.cluster = cluster
        self.net = net
        self.rng = rng
        self.targets = []

    def resolve(self, prefix):
        """Turns the spec's target into node ids, at the moment the fault starts."""
        t = self.spec.get("target", "random")
        ids = self.cluster.members
        if isinstance(t, list):
            self.targets = t
        elif t == "random":
            self.targets = [self.rng.choice(ids)]
        elif t == "minority":
            self.targets = self.rng.sample(ids, (len(ids) - 1) // 2)
        elif t.startswith("owner:"):
            self.targets = [self.cluster.owner_of(f"{prefix}-{t[len('owner:'):]}")]
        else:
            self.targets = [t]
        for n in self.targets:
            if n not in self.cluster.all_ids:
                raise RuntimeError(f"fault target {n} is not a node ({', '.join(self.cluster.all_ids)})")

    @property
    def name(self):
        return f"{self.spec['kind']} {','.join(self.targets)}" + (f" ({self.detail()})" if self.detail() else "")

    def detail(self):
        return ""

    def others(self):
        return [n for n in self.cluster.members if n not in self.targets]

    def ip(self, n):
        return self.cluster.topology.ip(n)


class Kill(Fault):
    """SIGKILL; the stop restarts the node on the same data."""
    def start(self):
        for n in self.targets:
            self.cluster.nodes[n].kill()

    def stop(self):
        for n in self.targets:
            if not self.cluster.nodes[n].running():
                self.cluster.nodes[n].start()


class Wipe(Kill):
    """SIGKILL and the disk is gone; the stop restarts the node empty."""
    def start(self):
        super().start()
        for n in self.targets:
            self.cluster.nodes[n].wipe()


class Restart(Kill):
    """A graceful stop (SIGTERM), `duration` seconds down, then start: a rolling upgrade step."""
    def start(self):
        for n in self.targets:
            self.cluster.nodes[n].terminate()


class Pause(Fault):
    """SIGSTOP: a hung node that keeps its connections open and answers nothing."""
    def start(self):
        for n in self.targets:
            self.cluster.nodes[n].pause()

    def stop(self):
        for n in self.targets:
            self.cluster.nodes[n].resume()


class Partition(Fault):
    """The targets and the rest cannot reach each other (clients still reach everyone)."""
    needs_network = True

    def rules(self):
        out = []
        for a in self.targets:
            for b in self.others():
                out.append(f"  ip saddr {self.ip(a)} ip daddr {self.ip(b)} drop")
                out.append(f"  ip saddr {self.ip(b)} ip daddr {self.ip(a)} drop")
        return out

    def start(self):
        self.net.set(id(self), self.rules())

    def stop(self):
        self.net.set(id(self), [])


class OneWay(Partition):
    """Packets from the targets to the rest are dropped; the other direction flows."""
    def rules(self):
        return [f"  ip saddr {self.ip(a)} ip daddr {self.ip(b)} drop" for a in self.targets for b in self.others()]

    def detail(self):
        return "outbound only"


class Flap(Partition):
    """The targets' links go down and up every `period` seconds."""
    def detail(self):
        return f"every {self.spec.get('period', 2)} s"

    def start(self):
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        period = float(self.spec.get("period", 2))
        down = True
        while not self.stopping.is_set():
            self.net.set(id(self), self.rules() if down else [])
            down = not down
            self.stopping.wait(period)

    def stop(self):
        self.stopping.set()
        self.thread.join()
        self.net.set(id(self), [])


class Loss(Partition):
    """A share of the packets between the targets and `peers` (default: everyone) is lost."""
    def detail(self):
        return f"{self.spec.get('percent', 10)}% loss"

    def peers(self):
        return self.spec.get("peers", self.others())

    def rules(self):
        p = int(self.spec.get("percent", 10))
        out = []
        for a in self.targets:
            for b in self.peers():
                for s, d in ((a, b), (b, a)):
                    out.append(f"  ip saddr {self.ip(s)} ip daddr {self.ip(d)} numgen random mod 100 < {p} drop")
        return out


class Delay(Loss):
    """Packets between the targets and `peers` wait `ms` plus up to `jitter_ms` (the delayer)."""
    def detail(self):
        return f"{self.spec.get('ms', 50)} ms + up to {self.spec.get('jitter_ms', 0)} ms"

    def start(self):
        self.procs = []
        self.rules_added = []
        pairs = [(a, b) for a in self.targets for b in self.peers()] + [(b, a) for a in self.targets for b in self.peers()]
        by_source = {}
        for s, d in pairs:
            by_source.setdefault(s, set()).add(d)
        for s, dests in by_source.items():
            ns = NS_PREFIX + s
            for d in sorted(dests):
                rule = ["OUTPUT", "-d", self.ip(d), "-j", "NFQUEUE", "--queue-num", "7", "--queue-bypass"]
                sh("ip", "netns", "exec", ns, "iptables", "-A", *rule)
                self.rules_added.append((ns, rule))
            self.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, self.cluster.delayer, "7", str(self.spec.get("ms", 50)),
                 str(self.spec.get("jitter_ms", 0))], stdout=subprocess.DEVNULL, start_new_session=True))
            self.cluster.record_pid(self.procs[-1].pid)

    def stop(self):
        for ns, rule in self.rules_added:
            sh("ip", "netns", "exec", ns, "iptables", "-D", *rule, check=False)
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
            p.wait()


class LossAndDelay(Fault):
    needs_network = True

    def __init__(self, *a):
        super().__init__(*a)
        self.parts = [Loss(*a), Delay(*a)]

    def detail(self):
        return "; ".join(p.detail() for p in self.parts)

    def start(self):
        for p in self.parts:
            p.targets = self.targets
            p.start()

    def stop(self):
        for p in self.parts:
            p.stop()


class Rate(Fault):
    """The targets' links carry at most `mbit` megabits per second each way (tbf)."""
    needs_network = True

    def detail(self):
        return f"{self.spec.get('mbit', 8)} Mbit/s"

    def commands(self, verb):
        rate = f"{self.spec.get('mbit', 8)}mbit"
        out = []
        for n in self.targets:
            tbf = ["root", "tbf", "rate", rate, "burst", "64kb", "latency", "500ms"] if verb == "add" else ["root"]
            out.append(["tc", "qdisc", verb, "dev", self.cluster.topology.veth(n)] + tbf)
            out.append(["ip", "netns", "exec", NS_PREFIX + n, "tc", "qdisc", verb, "dev", "eth0"] + tbf)
        return out

    def start(self):
        for c in self.commands("add"):
            sh(*c)

    def stop(self):
        for c in self.commands("del"):
            sh(*c, check=False)


class DiskFull(Fault):
    """The node's data filesystem (a tmpfs) is filled to the last byte with a ballast file."""
    def start(self):
        self.ballast = []
        for n in self.targets:
            node = self.cluster.nodes[n]
            if not self.cluster.tmpfs_mb:
                raise RuntimeError("disk-full needs [cluster] tmpfs_mb")
            path = os.path.join(node.data, "chaos-ballast")
            self.ballast.append(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                # Big writes until ENOSPC, then ever smaller ones: the last byte goes too.
                for size in (1 << 20, 4096, 1):
                    block = b"\0" * size
                    while True:
                        try:
                            if os.write(fd, block) == 0:
                                break
                        except OSError:
                            break
            finally:
                os.close(fd)

    def detail(self):
        return "tmpfs filled"

    def stop(self):
        for p in self.ballast:
            if os.path.exists(p):
                os.remove(p)


class Skew(Fault):
    """The targets' wall clocks jump by `seconds` (libfaketime; monotonic time stays real)."""
    def detail(self):
        return f"{int(self.spec.get('seconds', 300)):+d} s"

    def start(self):
        for n in self.targets:
            self.cluster.nodes[n].set_clock_offset(int(self.spec.get("seconds", 300)))

    def stop(self):
        for n in self.targets:
            self.cluster.nodes[n].set_clock_offset(0)


class Membership(Fault):
    """A change of the cluster's members through `cairn cluster join/leave`, as an operator
    makes it while uploads run. Changes are made one at a time, each awaited until every
    member has adopted its config epoch (docs/operations.md: "One change at a time")."""
    changing = threading.Lock()
    handoff_timeout = 300

    def via(self):
        """A running member other than the targets to send the change to."""
        for n in self.others():
            node = self.cluster.nodes[n]
            if node.running() and not node.paused:
                return node
        raise RuntimeError("no running member to send a membership change to")

    def change(self, verb, arg):
        r = subprocess.run([self.cluster.cairn, "cluster", verb, arg, "--address", self.via().address],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0 or "config epoch " not in r.stdout:
            raise RuntimeError(f"cairn cluster {verb} {arg}: exit {r.returncode}: {(r.stdout + r.stderr).strip()}")
        return int(r.stdout.split("config epoch ")[1].split(":")[0])

    def leave(self, n):
        """Removes `n`; it keeps running and hands its blobs off. Returns its log mark."""
        node = self.cluster.nodes[n]
        mark = node.log_size()
        epoch = self.change("leave", n)
        self.cluster.members.remove(n)
        self.cluster.wait_converged(epoch=epoch)
        return mark

    def stop_after_handoff(self, n, mark):
        """Waits for the removed node's "may be stopped" (every blob it held is on its new
        replicas), then stops it gracefully, as the runbook says."""
        node = self.cluster.nodes[n]
        deadline = time.time() + self.handoff_timeout
        while "this node may be stopped" not in node.log_since(mark):
            if time.time() > deadline:
                raise RuntimeError(f"{n} did not finish its handoff within {self.handoff_timeout} s")
            if not node.running():
                raise RuntimeError(f"{n} exited during its handoff (see {node.log_path})")
            time.sleep(0.5)
        node.terminate()

    def join(self, n):
        """Starts `n` empty with `--join` through a member, and waits for every member to adopt it."""
        node = self.cluster.nodes[n]
        node.join_via = self.via().address
        mark = node.log_size()
        node.start()
        self.cluster.members.append(n)
        # It prints "joined the cluster through ADDRESS: config epoch N, K nodes".
        said = node.log_since(mark).split("joined the cluster through ")[-1]
        self.cluster.wait_converged(epoch=int(said.split("config epoch ")[1].split(",")[0]))


class Join(Membership):
    """A spare node joins (it receives its share of the blobs while uploads run); the stop
    removes it again: it hands every blob off and is then stopped."""
    def start(self):
        for n in self.targets:
            if n in self.cluster.members:
                raise RuntimeError(f"join: {n} is a member already; give a spare (cluster.spares)")
            with Membership.changing:
                self.join(n)

    def stop(self):
        for n in self.targets:
            with Membership.changing:
                mark = self.leave(n)
            self.stop_after_handoff(n, mark)


class Leave(Membership):
    """A member is removed while uploads run and hands its blobs off, and is then stopped;
    the stop replaces it: same id and address, an empty disk, `--join` (a new machine)."""
    def start(self):
        self.marks = {}
        for n in self.targets:
            if n not in self.cluster.members:
                raise RuntimeError(f"leave: {n} is not a member")
            with Membership.changing:
                self.marks[n] = self.leave(n)

    def stop(self):
        for n in self.targets:
            if self.spec.get("handoff", True):
                self.stop_after_handoff(n, self.marks[n])
            else:  # the broken operator: stops it at once (broken/r1-leave-no-handoff)
                self.cluster.nodes[n].kill()
            self.cluster.nodes[n].wipe()
            with Membership.changing:
                self.join(n)


KINDS = {
    "kill": Kill, "wipe": Wipe, "restart": Restart, "pause": Pause, "partition": Partition, "oneway": OneWay,
    "flap": Flap, "loss": Loss, "delay": Delay, "loss+delay": LossAndDelay, "rate": Rate, "disk-full": DiskFull,
    "skew": Skew, "join": Join, "leave": Leave,
}


def make(spec, cluster, net, rng):
    kind = spec.get("kind")
    if kind not in KINDS:
        raise RuntimeError(f"unknown fault kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    return KINDS[kind](spec, cluster, net, rng)
