"""`inloop lab ...`: the two-host lab on network namespaces (see deploy/lab/README.md)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

_DESCRIPTION = """\
Two hosts on this machine: network namespaces gpu-host (the runtime) and cpu-host (tools,
controller, the loadgen) joined by a veth pair, with the delay of a VPC between them
(default 0.25 ms ± 0.05 ms each way: tc netem where the kernel has it, else a userspace
TCP relay on the path). Every service runs with mTLS and a bearer token and exports its
spans, tagged host.name=<namespace>, to the loadgen's receiver in cpu-host.

  inloop lab up       create it and start the services (waits for health)
  inloop lab run      up, `inloop loadgen matrix` in cpu-host, the report, then down
  inloop lab down     stop every lab process, remove namespaces and links (idempotent)
  inloop lab status   what exists now

Needs root and iproute2. Settings: --config FILE (deploy/lab/lab.toml documents every
key), then the flags below."""


def _add_config_args(p: argparse.ArgumentParser, service_args: bool = False) -> None:
    from inloop.loadgen.lab.config import BY_KEY, SCOPE
    from inloop.loadgen.lab.lab import DEFAULT_STATE_DIR
    from inloop.services.common.settings import add_arguments

    def settings(*keys):
        return [BY_KEY[k] for k in keys]

    g = p.add_argument_group("lab")
    g.add_argument("--config", metavar="FILE", help="lab TOML ([lab] and [run] tables; e.g. deploy/lab/lab.toml)")
    g.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                   help=f"certificates, token, logs and state.json (default {DEFAULT_STATE_DIR})")
    add_arguments(g, settings("gpu_ns", "cpu_ns"), SCOPE)
    if not service_args:
        return
    add_arguments(g, settings("mechanism", "delay_ms", "jitter_ms"), SCOPE)
    add_arguments(p.add_argument_group("services"), settings("model", "backend", "start_timeout_s"), SCOPE)


def _add_matrix_args(m, families) -> None:
    from inloop.loadgen.lab.config import BY_KEY, SCOPE
    from inloop.services.common.settings import add_arguments

    family = dataclasses.replace(BY_KEY["families"], choices=families)
    add_arguments(m, [BY_KEY["profiles"], family, *(BY_KEY[k] for k in ("per_family", "runs", "warmups",
                                                                       "max_tokens"))], SCOPE)


def _config(args: argparse.Namespace):
    """Flags > env INLOOP_LAB_<KEY> > --config's TOML > defaults (lab/config.py)."""
    from inloop.loadgen.lab.config import SETTINGS, load_config
    from inloop.services.common.settings import given_flags

    return load_config(args.config, **given_flags(args, SETTINGS))


def _guarded(action):
    """Run `action(args)` turning the lab's errors into one line on stderr and an exit code."""
    def run(args: argparse.Namespace) -> int:
        from inloop.loadgen.lab.config import LabConfigError
        from inloop.loadgen.lab.netns import NetnsError
        from inloop.loadgen.lab.processes import LabError

        try:
            return action(args) or 0
        except LabConfigError as exc:
            print(f"lab: error: {exc}", file=sys.stderr)
            return 2
        except (NetnsError, LabError) as exc:
            print(f"lab: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:   # the lab was already taken down on the way out
            print("\nlab: interrupted", file=sys.stderr)
            return 130
    return run


def _up(args: argparse.Namespace) -> int:
    from inloop.loadgen.lab.lab import signals_end_in_teardown, up

    with signals_end_in_teardown():
        state = up(_config(args), Path(args.state_dir))
    print(json.dumps({"up": True, "mechanism": state.mechanism, "runtime": state.runtime_target,
                      "controller": state.cfg.controller_target, "state_dir": str(state.root)}))
    return 0


def _run(args: argparse.Namespace) -> int:
    from inloop.loadgen.lab.lab import run, signals_end_in_teardown

    with signals_end_in_teardown():
        artifact = run(_config(args), Path(args.state_dir), Path(args.out), keep_up=args.keep_up)
    print(f"lab: report {artifact} (+ .md, .html)", file=sys.stderr)
    return 0


def _down(args: argparse.Namespace) -> int:
    from inloop.loadgen.lab.lab import down

    down(_config(args), Path(args.state_dir), grace_s=args.grace_s)
    return 0


def _status(args: argparse.Namespace) -> int:
    from inloop.loadgen.lab.lab import status

    doc = status(_config(args), Path(args.state_dir))
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    print(f"lab {'up' if doc['up'] else 'not up'} (state in {doc['state_dir']})")
    if "mechanism" in doc:
        print(f"  delay: {doc['mechanism'] or 'not set up'}, {doc['delay_ms']} ms ± {doc['jitter_ms']} ms each way")
        print("  targets: " + ", ".join(f"{k} {v}" for k, v in doc["targets"].items()))
    for ns, host in doc["hosts"].items():
        if not host["exists"]:
            print(f"  {ns}: no namespace")
            continue
        print(f"  {ns}: pids {' '.join(map(str, host['pids'])) or '-'}")
        for addr in host["addresses"]:
            print(f"    {addr}")
    for proc in doc.get("processes", []):
        print(f"  {proc['name']:10} {proc['ns']:10} pid {proc['pid']:<7} "
              f"{'running' if proc['running'] else 'gone':8} {proc['log']}")
    if doc["root_links"]:
        print(f"  left-over links in the root namespace: {', '.join(doc['root_links'])}")
    return 0


def register(sub) -> None:
    from inloop.loadgen.lab.relay import register_relay
    from inloop.loadgen.tasks import FAMILIES

    p = sub.add_parser("lab", help="the two-host lab: network namespaces, emulated VPC delay, the matrix across them",
                       description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    lsub = p.add_subparsers(dest="lab_command", metavar="CMD")
    u = lsub.add_parser("up", help="create the namespaces and link, start the services, wait for health",
                        description="Create both hosts and the link, write certificates and a token into "
                                    "--state-dir, start the services with mTLS + token, wait until healthy. "
                                    "Prints the targets as JSON. A failing step tears everything down.")
    _add_config_args(u, service_args=True)
    u.set_defaults(func=_guarded(_up))

    r = lsub.add_parser("run", help="up, the loadgen matrix inside cpu-host (TLS on), the report, down",
                        description="Bring the lab up unless it is up, run `inloop loadgen matrix` inside the CPU "
                                    "host against it, add the lab's wire-time comparison (matrix.lab) to the "
                                    "report in --out, print it, and take the lab down (also when a step fails "
                                    "or on SIGINT/SIGTERM/SIGHUP).")
    _add_config_args(r, service_args=True)
    m = r.add_argument_group("matrix")
    _add_matrix_args(m, FAMILIES)
    m.add_argument("--out", default="lab-out", help="directory for the report and the services' logs (default lab-out)")
    m.add_argument("--keep-up", action="store_true", help="leave the lab up afterwards (then `inloop lab down`)")
    r.set_defaults(func=_guarded(_run))

    d = lsub.add_parser("down", help="stop every lab process and remove namespaces and links (idempotent)",
                        description="SIGTERM every process in the lab's namespaces (and any recorded in "
                                    "state.json), SIGKILL what is left after --grace-s, then delete the "
                                    "namespaces and any left-over link. Safe to run when nothing is up.")
    _add_config_args(d)
    d.add_argument("--grace-s", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL (default 10)")
    d.set_defaults(func=_guarded(_down))

    s = lsub.add_parser("status", help="say what exists: namespaces, addresses, processes",
                        description="Show the lab's namespaces with their addresses and process ids, the "
                                    "processes state.json records, and any left-over link.")
    _add_config_args(s)
    s.add_argument("--json", action="store_true", help="print the status as JSON")
    s.set_defaults(func=_guarded(_status))

    register_relay(lsub)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
