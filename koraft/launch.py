"""Run a training stage in one process, or across processes and machines with `accelerate launch`.

The DVC command stays `python stages/train.py`: with `launcher: accelerate` the stage script
starts `accelerate launch` on itself, and the processes it spawns (which see LOCAL_RANK) do
the work. The engine (DDP, FSDP, DeepSpeed ZeRO-2/3) is the accelerate config file named in
params; koraft adds nothing on top of it.

Topology: `num_machines`, `machine_rank`, `main_process_ip` and `main_process_port` come from
params, and an environment variable (KORAFT_MACHINE_RANK, ...) overrides each, because every
node runs the same commit and the same params.yaml but has its own rank.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from koraft.errors import KoraftError, ParamError
from koraft.params import reject_unknown_keys

LAUNCHERS = ("single", "accelerate")
# accelerate launch flags koraft passes, and the environment variable that overrides each.
TOPOLOGY = {
    "num_processes": "KORAFT_NUM_PROCESSES",  # in total, across all machines
    "num_machines": "KORAFT_NUM_MACHINES",
    "machine_rank": "KORAFT_MACHINE_RANK",
    "main_process_ip": "KORAFT_MAIN_PROCESS_IP",
    "main_process_port": "KORAFT_MAIN_PROCESS_PORT",
}
ENGINES = {"MULTI_GPU": "ddp", "FSDP": "fsdp", "DEEPSPEED": "deepspeed"}


def launched() -> bool:
    """True inside a process started by `accelerate launch` / torchrun."""
    return "LOCAL_RANK" in os.environ


def check_launcher(settings: dict[str, Any], key: str) -> str:
    """The section's launcher (`single` when absent), with its accelerate settings checked."""
    launcher = settings.get("launcher", "single")
    if launcher not in LAUNCHERS:
        raise ParamError(f"{key}.launcher", f"must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if launcher == "accelerate":
        accelerate_settings(settings, key)
    return launcher


def accelerate_settings(settings: dict[str, Any], key: str) -> dict[str, Any]:
    """`{key}.accelerate` with the environment's topology applied; the config file must exist and name an engine."""
    section = settings.get("accelerate")
    if not isinstance(section, dict):
        raise ParamError(f"{key}.accelerate", "section is missing or not a mapping (launcher: accelerate needs it)")
    reject_unknown_keys(section, {"config", *TOPOLOGY}, f"{key}.accelerate",
                        f"keys are config, {', '.join(TOPOLOGY)}")
    resolved = dict(section)
    for name, variable in TOPOLOGY.items():
        if os.environ.get(variable):
            resolved[name] = os.environ[variable]
    for name in ("num_processes", "num_machines", "machine_rank", "main_process_port"):
        value = resolved.get(name)
        if value is None:
            continue
        try:
            resolved[name] = int(value)
        except (TypeError, ValueError):
            raise ParamError(f"{key}.accelerate.{name}", f"must be an integer, got {value!r} "
                                                         f"(or set {TOPOLOGY[name]})") from None
    machines = resolved.get("num_machines") or 1
    if machines > 1 and not resolved.get("main_process_ip"):
        raise ParamError(f"{key}.accelerate.main_process_ip", f"{machines} machines need the address of machine "
                                                              f"rank 0 (or set KORAFT_MAIN_PROCESS_IP)")
    if not 0 <= (resolved.get("machine_rank") or 0) < machines:
        raise ParamError(f"{key}.accelerate.machine_rank", f"must be in [0, {machines - 1}], got "
                                                           f"{resolved['machine_rank']}")
    resolved["engine"] = engine_of(resolved.get("config"), f"{key}.accelerate.config")
    return resolved


def engine_of(config: Any, key: str) -> str:
    """ddp, fsdp or deepspeed, from the accelerate config file's distributed_type."""
    if not isinstance(config, str):
        raise ParamError(key, f"must be the path of an accelerate config file, got {config!r}")
    try:
        content = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamError(key, f"{config}: file not found (configs/accelerate/ has ddp, fsdp, zero2, zero3)") from None
    except yaml.YAMLError as exc:
        raise ParamError(key, f"{config}: invalid YAML: {exc}") from None
    kind = content.get("distributed_type") if isinstance(content, dict) else None
    if kind not in ENGINES:
        raise ParamError(key, f"{config}: distributed_type must be one of {', '.join(ENGINES)}, got {kind!r}")
    return ENGINES[kind]


def launch_command(settings: dict[str, Any], script: str) -> list[str]:
    """`accelerate launch` on the stage script, with the topology flags that are set."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", settings["config"]]
    for name in TOPOLOGY:
        if settings.get(name) is not None:
            command += [f"--{name}", str(settings[name])]
    return [*command, script]


def launched_elsewhere(settings: dict[str, Any], key: str, script: str) -> bool:
    """With launcher: accelerate, outside a launched process: run `script` under accelerate launch and
    return True (the stage is done). Otherwise False: this process trains."""
    if check_launcher(settings, key) != "accelerate" or launched():
        return False
    relaunch(settings, key, script)
    return True


def relaunch(settings: dict[str, Any], key: str, script: str) -> None:
    """Run the stage script under `accelerate launch` and wait; a failed rank fails the stage."""
    import torch

    launch = accelerate_settings(settings, key)
    if launch["engine"] != "ddp" and not torch.cuda.is_available():
        raise ParamError(f"{key}.accelerate.config", f"{launch['config']} runs {launch['engine']}, which needs GPUs; "
                                                     f"on CPU use configs/accelerate/ddp.yaml (gloo)")
    command = launch_command(launch, script)
    print(f"{key}: {launch['engine']} via accelerate launch ({launch.get('num_processes') or 'all'} processes, "
          f"machine {launch.get('machine_rank') or 0} of {launch.get('num_machines') or 1})", flush=True)
    code = subprocess.run(command).returncode
    if code != 0:
        raise KoraftError(f"{key}: accelerate launch exited with status {code}; the failing rank's error is above")


def engine() -> str:
    """The engine of this process: single, ddp, fsdp or deepspeed (from what accelerate launch exported)."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "fsdp"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return "deepspeed"
    return "ddp" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "single"


def is_main_process() -> bool:
    """Rank 0 of all processes on all machines; the only one that writes outputs and metrics."""
    return int(os.environ.get("RANK", "0")) == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def start_process_group() -> None:
    """Join the other processes now (accelerate's PartialState, which the trainer reuses), so that
    rank 0 can prepare the checkpoint folder before the others read it. A no-op in one process."""
    if launched():
        import torch
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())


def wait_for_everyone() -> None:
    """A barrier across all processes; a no-op in one process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
