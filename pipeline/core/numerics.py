"""The numeric platform a grid's floats come from, and how to pin it to one instruction set.

Every library in a run picks its SIMD kernels for the CPU it finds: PyTorch's own kernels, the
MKL and oneDNN inside PyTorch, FAISS, and the OpenBLAS that FAISS ships. On an AVX-512 machine
and on an AVX2-only one the same code gives floats that differ in their last bits from the first
update on. A healthy training run absorbs that: the published rows of healthy runs re-run to 1e-4
on machines other than the one that made them. A run whose training is chaotic does not: a
memory-bank run collapsing from a random init leaves the shared trajectory within about 200
updates, and since its passages all embed to nearly one point, its ranking (and so its NDCG) is
decided by those last bits. Such a row reproduces only with the kernels it was made with.
`PINNED` names the environment that makes every library use its AVX2 kernels on any x86 CPU with
AVX2 or more, so that a grid made pinned can be re-made pinned on another machine:

    make check-reference NUMERICS=avx2 ...
    python -m pipeline.core.numerics run avx2 -- snakemake --cores 2 ...

`platform()` is what `pipeline.results.reference publish` records in provenance.json, so a reader
knows which kernels made a reference.
"""

from __future__ import annotations

import os

from pipeline.core.common import PipelineError, command_parser, run_main

PINNED: dict[str, dict[str, str]] = {
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",   # PyTorch's vectorised kernels
        "MKL_CBWR": "AVX2",              # MKL's conditional numerical reproducibility (PyTorch's BLAS)
        "ONEDNN_MAX_CPU_ISA": "AVX2",    # oneDNN inside PyTorch
        "FAISS_SIMD_LEVEL": "AVX2",      # FAISS's dynamic dispatch (faiss 1.15; not FAISS_OPT_LEVEL)
        "OPENBLAS_CORETYPE": "Haswell",  # the OpenBLAS bundled with faiss-cpu (flat search's sgemm)
    },
}
LAUNCH_ENV = dict(os.environ)  # before run_main's defaults: `run` hands its command the caller's environment
ENV_KEYS = sorted({key for env in PINNED.values() for key in env})


def pinned_env(name: str) -> dict[str, str]:
    if name not in PINNED:
        raise ValueError(f"numerics: unknown instruction set {name!r}; expected one of {sorted(PINNED)}")
    return dict(PINNED[name])


NOTABLE_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")  # where x86 float kernels change


def _cpu() -> str:
    """The CPU's model name and which of NOTABLE_FLAGS it has (a VM's model name is often generic)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        import platform as host  # stdlib; only where /proc is missing (macOS)
        return host.processor() or host.machine()
    flags = set(fields.get("flags", "").split())
    return f"{fields.get('model name', 'unknown')} [{' '.join(f for f in NOTABLE_FLAGS if f in flags)}]"


def platform() -> dict[str, object]:
    """The kernels this process's floats come from: CPU, library versions, the SIMD level PyTorch
    and FAISS chose, and any pinning variable that is set."""
    import logging

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines would bury the answer
    import faiss  # heavy: kept out of the import of pipeline.core
    import torch

    return {"cpu": _cpu(), "torch": torch.__version__,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "faiss": faiss.__version__, "faiss_simd_level": faiss.to_string(faiss.SIMDConfig.get_level()),
            "pinned_env": {key: os.environ[key] for key in ENV_KEYS if key in os.environ}}


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser, sub = command_parser("python -m pipeline.core.numerics", __doc__)
    run = sub.add_parser("run", help="run a command with every library's float kernels pinned")
    run.add_argument("isa", help=f"instruction set: one of {sorted(PINNED)}")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARG ...]")
    env = sub.add_parser("env", help="print the pinning variables as KEY=VALUE")
    env.add_argument("isa", help=f"instruction set: one of {sorted(PINNED)}")
    sub.add_parser("show", help="this machine's CPU and the SIMD levels PyTorch and FAISS use")
    args = parser.parse_args(argv)
    try:
        if args.command == "show":
            for key, value in platform().items():
                print(f"{key}: {value}")
        elif args.command == "env":
            print(" ".join(f"{key}={value}" for key, value in pinned_env(args.isa).items()))
        else:
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            if not cmd:
                raise PipelineError("numerics run: give the command after --, e.g. run avx2 -- snakemake --cores 2")
            os.execvpe(cmd[0], cmd, {**LAUNCH_ENV, **pinned_env(args.isa)})
    except ValueError as exc:
        raise PipelineError(str(exc)) from None


if __name__ == "__main__":
    run_main(main)
