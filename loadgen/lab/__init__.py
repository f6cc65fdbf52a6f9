"""The two-host lab: gpu-host and cpu-host as network namespaces on one machine, with the
delay of a VPC between them, running the whole mesh with mTLS and the loadgen matrix across
it (`inloop lab up|run|down|status`; deploy/lab/README.md).

    config.py     LabConfig: names, addresses, delay, what `run` runs (defaults, TOML, flags)
    netns.py      namespaces, the veth link, netem, processes inside them, teardown
    relay.py      the userspace delay relay, where the kernel has no netem
    processes.py  the services (and relay) inside the namespaces, certificates, health
    wire.py       mean wire time per hop, cross-host vs same-host, into the report
    lab.py        up / run / down / status
    cli.py        `inloop lab ...`
"""
