"""Many nodes on a real Redis Cluster and behind Redis Sentinel (issue 18):
two portcullis nodes on a three-master cluster with replicas see each
other's blocks and quotas; when a master dies its replica is promoted and
both nodes keep deciding (on local state in between, which
`portcullis_redis_up` says), losing no message. Behind Sentinel, the nodes
follow the promoted replica."""

import subprocess
import threading

import pytest

from conftest import free_port, try_send, wait_port, wait_until
from test_t15_class_of_service import alice_on_two_nodes, alice_rcpts, cos_config, dns_server, server  # noqa: F401


def refused_within_a_second(node, source: str) -> tuple:
    """The other node's mirror of the lists polls their version four times
    a second: a block made elsewhere holds there within one."""
    return wait_until(lambda: (lambda r: r[0] == 421 and r)(try_send(node.mx, "x@nospf.test", source=source)),
                      1.0, f"{source} refused on the other node")


class RedisProcess:
    """One redis-server (or redis-sentinel) on loopback, its files in `workdir`."""

    def __init__(self, workdir, *args, sentinel=False):
        self.port = free_port()
        self.workdir = workdir / str(self.port)
        self.workdir.mkdir()
        self.args = list(args)
        self.sentinel = sentinel
        self.proc = None

    def start(self):
        if self.sentinel:
            conf = self.workdir / "sentinel.conf"
            conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n" + "".join(self.args))
            cmd = ["redis-sentinel", str(conf)]
        else:
            cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self.workdir), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cli(self, *args) -> str:
        return subprocess.run(["redis-cli", "-p", str(self.port), *args],
                              capture_output=True, text=True, timeout=10).stdout


class RedisCluster:
    """Three masters, each with one replica, made by `redis-cli --cluster create`."""

    def __init__(self, workdir):
        # The bus port is named: the default (client port + 10000) is out
        # of range for a free port above 55535.
        self.nodes = [RedisProcess(workdir, "--cluster-enabled", "yes", "--cluster-node-timeout", "1000",
                                   "--cluster-config-file", "nodes.conf", "--cluster-port", str(free_port()))
                      for _ in range(6)]

    def start(self):
        for n in self.nodes:
            n.start()
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        wait_until(lambda: all("cluster_state:ok" in n.cli("cluster", "info") for n in self.nodes), 20,
                   "the cluster to be ok")
        # A replica that never synced is "too old" to take over.
        wait_until(lambda: all("master_link_status:down" not in n.cli("info", "replication") for n in self.nodes),
                   30, "every replica to sync with its master")
        return self

    def stop(self):
        for n in self.nodes:
            n.kill()

    @property
    def seeds(self) -> str:
        return ", ".join(f'"redis://127.0.0.1:{n.port}"' for n in self.nodes[:3])

    def master_of(self, key: str) -> RedisProcess:
        slot = int(self.nodes[0].cli("cluster", "keyslot", key).strip())
        for line in self.nodes[0].cli("cluster", "nodes").splitlines():
            _, addr, flags, *_rest = line.split()
            ranges = line.split()[8:]
            if "master" not in flags or "fail" in flags:
                continue
            for r in ranges:
                lo, _, hi = r.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    port = int(addr.split("@")[0].rsplit(":", 1)[1])
                    return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"no master for {key}")

    def roles(self) -> list[str]:
        return [n.cli("role").split("\n")[0] if n.proc.poll() is None else "dead" for n in self.nodes]


@pytest.fixture
def cluster(tmp_path):
    c = RedisCluster(tmp_path).start()
    yield c
    c.stop()


def cluster_state(c: RedisCluster) -> str:
    return f'\n[state]\nbackend = "redis"\ncluster_nodes = [{c.seeds}]\n'


def cluster_node(make_server, dns_server, c, default_mpm: int = 30):
    return server(make_server, dns_server, cos_config(default_mpm) + cluster_state(c))


def test_a_block_through_one_node_is_refused_on_the_other_within_a_second(make_server, dns_server, cluster):
    a = cluster_node(make_server, dns_server, cluster)
    b = cluster_node(make_server, dns_server, cluster)
    assert a.metric("portcullis_redis_up") == 1 and b.metric("portcullis_redis_up") == 1
    assert try_send(b.mx, "x@nospf.test", source="127.0.0.31")[0] == 250
    assert a.cli("blocklist", "add", "127.0.0.31", "--reason", "seen on A").returncode == 0
    assert "seen on A" in refused_within_a_second(b, "127.0.0.31")[1]
    wait_until(lambda: b.metric("portcullis_cluster_nodes") == 2, 10, "each node sees the other's heartbeat")


def test_a_quota_spent_on_one_node_counts_on_the_other(make_server, dns_server, cluster):
    config = f"[submission]\nrecipients_per_hour = 3\n{cluster_state(cluster)}"
    nodes = alice_on_two_nodes(make_server, dns_server, config)
    codes = alice_rcpts(nodes, [0, 0, 1, 1])
    assert [c for c, _ in codes[:3]] == [250, 250, 250]
    code, text = codes[3]
    assert code == 451 and b"per hour" in text


def test_a_dead_master_is_replaced_and_both_nodes_keep_deciding(make_server, dns_server, cluster):
    nodes = [cluster_node(make_server, dns_server, cluster, 100000) for _ in range(2)]
    codes, stop = [[], []], threading.Event()

    def load(i):
        while not stop.is_set():
            codes[i].append(try_send(nodes[i].mx, "news@good.test", source=f"127.0.0.{2 + i}")[0])

    threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    ups = [[], []]

    def watch(condition):
        # Every look at the nodes' redis_up is kept: the test asserts it
        # went to 0 and back to 1, not only its last value.
        for i, n in enumerate(nodes):
            ups[i].append(n.metric("portcullis_redis_up"))
        return condition()

    try:
        wait_until(lambda: min(map(len, codes)) >= 5, 20, "messages with the cluster whole")
        # The master of the lists' slot: every node polls it four times a second.
        doomed = cluster.master_of("pc:{global}:version")
        doomed.kill()
        wait_until(lambda: watch(lambda: all(0 in u for u in ups)), 20, "both nodes to see Redis fail")
        wait_until(lambda: cluster.roles().count("master") == 3, 30,
                   lambda: f"a replica promoted: {cluster.roles()}")
        seen = [len(c) for c in codes]
        wait_until(lambda: watch(lambda: all(u[-1] == 1 for u in ups) and
                                 all(len(c) >= s + 5 for c, s in zip(codes, seen))), 30,
                   lambda: f"both nodes on the new master: {ups}")
    finally:
        stop.set()
        for t in threads:
            t.join()
    for i, n in enumerate(nodes):
        assert set(codes[i]) == {250}, codes[i]
        assert len(n.wait_messages("u", len(codes[i]), timeout=30)) == len(codes[i]), "a message was lost"
    # Decisions are shared again: a block through one node holds on the other.
    assert nodes[0].cli("blocklist", "add", "127.0.0.77", "--reason", "after failover").returncode == 0
    refused_within_a_second(nodes[1], "127.0.0.77")


class Sentinel:
    """A master, its replica, and one sentinel watching them (quorum 1)."""

    def __init__(self, workdir):
        self.master = RedisProcess(workdir)
        self.workdir = workdir

    def start(self):
        self.master.start()
        self.replica = RedisProcess(self.workdir, "--replicaof", "127.0.0.1", str(self.master.port)).start()
        wait_until(lambda: "master_link_status:up" in self.replica.cli("info", "replication"), 20,
                   "the replica to sync")
        self.sentinel = RedisProcess(
            self.workdir,
            f"sentinel monitor mymaster 127.0.0.1 {self.master.port} 1\n",
            "sentinel down-after-milliseconds mymaster 1000\n",
            "sentinel failover-timeout mymaster 5000\n",
            sentinel=True,
        ).start()
        return self

    def stop(self):
        for p in (self.sentinel, self.replica, self.master):
            p.kill()

    def current_master_port(self) -> int:
        out = self.sentinel.cli("sentinel", "get-master-addr-by-name", "mymaster").split()
        return int(out[1]) if len(out) == 2 else 0


@pytest.fixture
def sentinel(tmp_path):
    s = Sentinel(tmp_path).start()
    yield s
    s.stop()


def test_behind_sentinel_nodes_follow_the_promoted_replica(make_server, dns_server, sentinel):
    state = (f'\n[state]\nbackend = "redis"\n'
             f'redis_url = "redis+sentinel://127.0.0.1:{sentinel.sentinel.port}/mymaster"\n')
    a, b = (server(make_server, dns_server, cos_config() + state) for _ in range(2))
    assert a.cli("blocklist", "add", "127.0.0.41", "--reason", "before failover").returncode == 0
    refused_within_a_second(b, "127.0.0.41")
    sentinel.master.kill()
    wait_until(lambda: sentinel.current_master_port() == sentinel.replica.port, 30, "the sentinel to promote")
    # Both nodes decide throughout, and find the new master by themselves.
    assert try_send(a.mx, "x@nospf.test", source="127.0.0.42")[0] == 250
    wait_until(lambda: a.metric("portcullis_redis_up") == 1 and b.metric("portcullis_redis_up") == 1, 10,
               "both nodes on the promoted replica")
    assert a.cli("blocklist", "add", "127.0.0.43", "--reason", "after failover").returncode == 0
    refused_within_a_second(b, "127.0.0.43")
    assert "127.0.0.43" in sentinel.replica.cli("hkeys", "pc:{global}:blocklist")
