"""The Cairn nodes of a chaos run: real `cairn serve` processes, started, killed, paused,
restarted and wiped by the nemeses."""
import json
import os
import shutil
import signal
import subprocess
import time

from topology import sh

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
STATE_DIR = "/tmp/cairn-chaos"


class Node:
    def __init__(self, cluster, node_id):
        self.cluster = cluster
        self.id = node_id
        self.dir = os.path.join(cluster.workdir, node_id)
        self.data = os.path.join(self.dir, "data")
        self.log_path = os.path.join(cluster.report, "nodes", f"{node_id}.log")
        self.clock_file = os.path.join(self.dir, "faketime")
        self.proc = None
        self.paused = False
        # Set by a membership fault: the next start joins through this address (`--join`)
        # instead of naming the first members (`--peers`).
        self.join_via = None

    @property
    def address(self):
        return self.cluster.topology.address(self.id)

    def argv(self):
        c = self.cluster
        peers = ",".join(f"{n}={c.topology.address(n)}" for n in c.ids)
        cluster = ["--join", self.join_via] if self.join_via else ["--peers", peers]
        # --insecure: the nodes listen on the private bridge this harness made (no other host
        # can reach it) and the subject here is faults, not credentials.
        return [c.cairn, "serve", "--node-id", self.id, *cluster, "--data", self.data,
                "--listen", self.address, "--replicas", str(c.replicas), "--write-quorum", str(c.write_quorum),
                "--insecure"] + c.node_args

    def env(self):
        env = dict(os.environ)
        if self.cluster.faketime:
            # Only the wall clock moves (timestamps, tombstones); timers keep real time.
            env.update(LD_PRELOAD=FAKETIME_LIB, FAKETIME_TIMESTAMP_FILE=self.clock_file,
                       FAKETIME_CACHE_DURATION="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
        return env

    def prepare(self):
        os.makedirs(self.data, exist_ok=True)
        if self.cluster.tmpfs_mb:
            sh("mount", "-t", "tmpfs", "-o", f"size={self.cluster.tmpfs_mb}m", "cairn-chaos", self.data)
        self.set_clock_offset(0)

    def set_clock_offset(self, seconds):
        with open(self.clock_file, "w") as f:
            f.write(f"{'+' if seconds >= 0 else '-'}{abs(int(seconds))}\n")

    def start(self, timeout=120):
        """Starts the process and returns once it listens (it prints `cairn: data in`)."""
        self.log_mark = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        log = open(self.log_path, "a")
        log.write(f"=== chaos: start {time.strftime('%H:%M:%S')}\n")
        log.flush()
        self.proc = subprocess.Popen(self.cluster.topology.wrap(self.id, self.argv()), stdout=log, stderr=log,
                                     env=self.env(), start_new_session=True)
        self.cluster.record_pid(self.proc.pid)
        self.paused = False
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.log_path) as f:
                f.seek(self.log_mark)
                if "cairn: data in" in f.read():
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.id} exited with {self.proc.returncode} while starting (see {self.log_path})")
            time.sleep(0.1)
        raise RuntimeError(f"{self.id} did not start within {timeout} s (see {self.log_path})")

    def log_since(self, mark):
        """The node's log from byte offset `mark` on."""
        with open(self.log_path, errors="replace") as f:
            f.seek(mark)
            return f.read()

    def log_size(self):
        return os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.running():
            os.kill(self.proc.pid, sig)

    def kill(self):
        self.signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait()

    def terminate(self, grace=20):
        self.resume()
        self.signal(signal.SIGTERM)
        if self.proc:
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()

    def pause(self):
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        if self.paused:
            self.signal(signal.SIGCONT)
            self.paused = False

    def wipe(self):
        """Everything on the node's disk is gone (a replaced machine)."""
        for entry in os.listdir(self.data):
            p = os.path.join(self.data, entry)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)

    def unmount(self):
        if self.cluster.tmpfs_mb:
            sh("umount", "-l", self.data, check=False)


class Cluster:
    def __init__(self, scenario, topology, cairn, workdir, report):
        c = scenario.get("cluster", {})
        # `nodes` are the first members; `spares` more nodes exist (address, namespace) for
        # a membership fault to join. `members` is who is in the cluster now.
        self.ids = [f"n{i + 1}" for i in range(int(c.get("nodes", 3)))]
        self.all_ids = self.ids + [f"n{len(self.ids) + i + 1}" for i in range(int(c.get("spares", 0)))]
        self.members = list(self.ids)
        self.replicas = int(c.get("replicas", min(3, len(self.ids))))
        self.write_quorum = int(c.get("write_quorum", min(2, self.replicas)))
        self.node_args = [str(a) for a in c.get("args", [])]
        self.tmpfs_mb = int(c.get("tmpfs_mb", 0))
        self.faketime = bool(c.get("faketime", False)) or any(
            f.get("kind") == "skew" for f in scenario.get("fault", []))
        self.topology = topology
        self.cairn = cairn
        self.workdir = workdir
        self.report = report
        os.makedirs(os.path.join(report, "nodes"), exist_ok=True)
        self.nodes = {n: Node(self, n) for n in self.all_ids}

    def record_pid(self, pid):
        os.makedirs(STATE_DIR, exist_ok=True)
        with open(os.path.join(STATE_DIR, "pids"), "a") as f:
            f.write(f"{pid}\n")

    def node_list(self):
        """The current members, as the workload and the verifier take them."""
        return ",".join(f"{n}={self.nodes[n].address}" for n in self.members)

    def start(self):
        for n in self.nodes.values():
            n.prepare()
        for n in self.members:
            self.nodes[n].start()
        self.wait_converged()

    def status(self, node_id):
        r = subprocess.run([self.cairn, "cluster", "status", "--json", "--address", self.nodes[node_id].address],
                           capture_output=True, text=True, timeout=10)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def wait_converged(self, timeout=90, epoch=None):
        """Until every member sees every member alive; given `epoch`, until every member has
        adopted it (a membership change: liveness under load is not the question there)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            views = [self.status(n) for n in self.members]
            if epoch is not None:
                done = all(v and int(v.get("configEpoch", 0)) == epoch and len(v.get("members", [])) == len(self.members)
                           for v in views)
            else:
                done = all(v and all(m.get("state", {}).get("status", "ALIVE") == "ALIVE" or not m.get("state", {}).get("status")
                                     for m in v.get("members", [])) and len(v.get("members", [])) == len(self.members)
                           for v in views)
            if done:
                return
            time.sleep(0.5)
        raise RuntimeError(f"the members {','.join(self.members)} did not converge"
                           f"{f' on config epoch {epoch}' if epoch else ''} within {timeout} s")

    def owner_of(self, ref):
        for n in self.members:
            if not self.nodes[n].running() or self.nodes[n].paused:
                continue
            r = subprocess.run([self.cairn, "cluster", "locate", "--ref", ref, "--address", self.nodes[n].address],
                               capture_output=True, text=True, timeout=10)
            if r.returncode == 0 and "owner " in r.stdout:
                return r.stdout.strip().split("owner ")[-1]
        raise RuntimeError(f"no node could say who owns {ref}")

    def heal_processes(self):
        for n in self.nodes.values():
            n.resume()
        for n in self.members:
            if not self.nodes[n].running():
                self.nodes[n].start()

    def stop(self):
        for n in self.nodes.values():
            n.terminate()
        for n in self.nodes.values():
            n.unmount()
