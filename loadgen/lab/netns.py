"""Two hosts on one machine: network namespaces, the veth link between them, and teardown.

    create_hosts(cfg)            # ip netns add gpu-host, cpu-host; veth pair; addresses; lo up
    try_netem(cfg)               # tc qdisc ... netem on both link ends, where the kernel has it
    exec_argv("cpu-host", argv)  # ["ip", "netns", "exec", "cpu-host", *argv]
    stop_processes(ns_pids("gpu-host"))   # SIGTERM, then SIGKILL after a grace period
    delete_hosts(cfg)            # ip netns del (the veth pair goes with its namespaces)

Everything goes through iproute2's `ip` and `tc`, so every step can be replayed by hand
(deploy/lab/README.md lists them). The veth pair is created with each end already inside
its namespace, so a failure half-way never leaves a link in the root namespace; teardown
still removes one of that name if it finds it there.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from inloop.loadgen.lab.config import LabConfig


class NetnsError(RuntimeError):
    """An `ip`/`tc` step that failed; the message quotes the command and its error."""


def check_can_run() -> None:
    """Fail with a clear reason where the lab cannot work: not root, or no iproute2."""
    if os.geteuid() != 0:
        raise NetnsError("the lab needs root (it creates network namespaces and links); run it with sudo")
    if shutil.which("ip") is None:
        raise NetnsError("the lab needs iproute2's `ip` command (apt-get install iproute2)")


def run_ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`ip [-n NS] ARGS...`; raises NetnsError with the command and stderr when `check` and it fails."""
    argv = ["ip", *(("-n", ns) if ns else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.returncode}")
    return done


def exec_argv(ns: str, argv: list[str]) -> list[str]:
    """The command line that runs `argv` inside namespace `ns` (it execs: the pid is argv's)."""
    return ["ip", "netns", "exec", ns, *argv]


def namespaces() -> set[str]:
    """Named network namespaces (`ip netns list` prints "NAME" or "NAME (id: N)")."""
    out = run_ip("netns", "list").stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def links_in_root(names: list[str]) -> list[str]:
    """Which of `names` exist as links in the root namespace (left over by a failed setup)."""
    return [n for n in names if run_ip("link", "show", "dev", n, check=False).returncode == 0]


def create_hosts(cfg: LabConfig) -> None:
    """The two namespaces, loopback up in both, and the veth pair with one address per end."""
    existing = namespaces() & {cfg.gpu_ns, cfg.cpu_ns}
    if existing:
        raise NetnsError(f"namespace(s) {', '.join(sorted(existing))} already exist: another lab is up "
                         "(`inloop lab status`), or remove them with `inloop lab down`")
    for ns in (cfg.gpu_ns, cfg.cpu_ns):
        run_ip("netns", "add", ns)
        run_ip("link", "set", "lo", "up", ns=ns)
    run_ip("link", "add", cfg.gpu_link, "netns", cfg.gpu_ns, "type", "veth",
           "peer", "name", cfg.cpu_link, "netns", cfg.cpu_ns)
    for ns, link, addr in ((cfg.gpu_ns, cfg.gpu_link, cfg.gpu_addr), (cfg.cpu_ns, cfg.cpu_link, cfg.cpu_addr)):
        run_ip("addr", "add", f"{addr}/{cfg.prefix_len}", "dev", link, ns=ns)
        run_ip("link", "set", link, "up", ns=ns)


def try_netem(cfg: LabConfig) -> tuple[bool, str]:
    """Delay both link ends' egress by delay ± jitter with netem; (False, why) where that fails.

    Each end delays what it sends, so each direction is delayed once and a round trip twice,
    as with the relay. On failure whatever was added is removed again.
    """
    if shutil.which("tc") is None:
        return False, "no `tc` command"
    added = []
    for ns, link in ((cfg.gpu_ns, cfg.gpu_link), (cfg.cpu_ns, cfg.cpu_link)):
        argv = exec_argv(ns, ["tc", "qdisc", "add", "dev", link, "root", "netem",
                              "delay", f"{cfg.delay_ms}ms", f"{cfg.jitter_ms}ms"])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            for ns_added, link_added in added:
                subprocess.run(exec_argv(ns_added, ["tc", "qdisc", "del", "dev", link_added, "root"]),
                               capture_output=True, timeout=30, check=False)
            return False, done.stderr.strip() or f"tc exited {done.returncode}"
        added.append((ns, link))
    return True, ""


def ns_pids(ns: str) -> list[int]:
    """Every process inside namespace `ns` (none when it does not exist)."""
    done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=30, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()] if done.returncode == 0 else []


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie child counts as gone; it is reaped here when it is ours)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat): with the pid it
    identifies one process, so teardown never signals a recycled pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def stop_processes(pids: list[int], grace_s: float = 10.0) -> dict[int, str]:
    """SIGTERM every pid, wait up to `grace_s` for all, SIGKILL the rest; {pid: how it ended}."""
    ended: dict[int, str] = {}
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            ended[pid] = "gone"
    deadline = time.monotonic() + grace_s
    waiting = [p for p in pids if p not in ended]
    while waiting and time.monotonic() < deadline:
        for pid in [p for p in waiting if not alive(p)]:
            ended[pid] = "terminated"
            waiting.remove(pid)
        if waiting:
            time.sleep(0.05)
    for pid in waiting:
        try:
            os.kill(pid, signal.SIGKILL)
            ended[pid] = "killed"
        except ProcessLookupError:
            ended[pid] = "terminated"
    for pid in waiting:   # SIGKILL is not instant: make sure they are gone before the namespace goes
        end = time.monotonic() + 5.0
        while alive(pid) and time.monotonic() < end:
            time.sleep(0.02)
    return ended


def delete_hosts(cfg: LabConfig) -> list[str]:
    """Remove both namespaces (their veth ends with them) and any leftover root-namespace link;
    returns what was removed. Idempotent: what does not exist is skipped."""
    removed = []
    present = namespaces()
    for ns in (cfg.gpu_ns, cfg.cpu_ns):
        if ns in present:
            run_ip("netns", "del", ns)
            removed.append(f"netns {ns}")
    for link in links_in_root([cfg.gpu_link, cfg.cpu_link]):
        run_ip("link", "del", "dev", link, check=False)
        removed.append(f"link {link}")
    return removed


def describe(cfg: LabConfig) -> dict:
    """What exists now: each namespace's addresses and process ids, and leftover root links."""
    present = namespaces()
    hosts = {}
    for ns in (cfg.gpu_ns, cfg.cpu_ns):
        if ns not in present:
            hosts[ns] = {"exists": False}
            continue
        addrs = run_ip("-brief", "addr", "show", ns=ns, check=False).stdout.split("\n")
        hosts[ns] = {"exists": True, "addresses": [" ".join(line.split()) for line in addrs if line.strip()],
                     "pids": ns_pids(ns)}
    return {"hosts": hosts, "root_links": links_in_root([cfg.gpu_link, cfg.cpu_link])}
