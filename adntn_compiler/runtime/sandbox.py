"""Running a bundle's build and emulation in a box: bubblewrap (`bwrap`) with the system folders read-only, a
private /tmp, no network, and the bundle's scratch folder as the only writable place the host shares.

Why: building runs the bundle's Makefile; qemu-aarch64 (user mode) runs the guest as a host process with host
system calls, and qemu-system-arm's semihosting hands the guest host files and a host shell (SYS_SYSTEM). A
signature says who made a bundle; the box bounds what any bundle, signed or not, can do to this machine.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import ConfigError

PACKAGE = "bubblewrap"
WORKDIR = "/bundle"  # where the scratch folder appears inside the box
# what compilers and qemu need (Debian points the arm-none-eabi headers through /etc/alternatives)
_SYSTEM = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc/alternatives")


def available() -> bool:
    return shutil.which("bwrap") is not None


def command(cmd: list[str], root: Path) -> list[str]:
    """`cmd` wrapped to run in the box with `root` as its (writable) working folder."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise ConfigError(f"running a C bundle's build or emulator needs bwrap (a sandbox): install the Debian "
                          f"package with `apt-get install --no-install-recommends {PACKAGE}`")
    box = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
           "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", WORKDIR, "--setenv", "LC_ALL", "C",
           "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for p in _SYSTEM:
        if os.path.islink(p):  # merged /usr: /bin -> usr/bin
            box += ["--symlink", os.readlink(p), p]
        elif os.path.isdir(p):
            box += ["--ro-bind", p, p]
    return [*box, "--bind", str(root), WORKDIR, "--chdir", WORKDIR, *cmd]


def run(cmd: list[str], root: Path, timeout: float, what: str, **kw) -> subprocess.CompletedProcess:
    """Run `cmd` in the box; a run past `timeout` seconds is killed and refused naming `what`."""
    try:
        return subprocess.run(command(cmd, root), capture_output=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{what} did not finish within {timeout:g} s") from None
