"""Fetch and unpack Debian packages without installing them, and run tools from unpacked packages.

- `fetch_deb` downloads a package's .deb with `apt-get download` into a cache folder (skipped when the candidate
  version is already there; works offline from the cache when the apt lists are missing);
- `unpack_deb` unpacks it with `dpkg-deb -x` (atomically: into a temporary folder, then renamed);
- `ensure_tools` finds `fluidsynth` and `openmpt123`: on PATH if installed, else from their packages and the libraries
  this system lacks (the set `apt-get -s install` would install), unpacked under the cache and run with
  LD_LIBRARY_PATH; only if that fails, and only as root, does it fall back to `apt-get install -y`
  (set M2MV_NO_APT_INSTALL=1 to forbid that).

Needs a Debian-family system (apt-get, apt-cache, dpkg-deb). `apt-get update` is run once, as root, when apt does
not know a package.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from m2mv.data.fileio import atomic_directory

log = logging.getLogger("m2mv.demo_corpus")


class DebianError(RuntimeError):
    """A package could not be fetched, unpacked or run."""


def _run(cmd: list[str], what: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 1800):
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise DebianError(f"{what}: `{cmd[0]}` not found (this needs a Debian-family system with apt and dpkg)") from e
    except subprocess.TimeoutExpired as e:
        raise DebianError(f"{what}: `{' '.join(cmd)}` timed out after {timeout:.0f} s") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise DebianError(f"{what}: `{' '.join(cmd)}` failed (exit {proc.returncode}): {tail}")
    return proc


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


_updated = False


def apt_update(reason: str) -> None:
    """Run `apt-get update` once per process (root only)."""
    global _updated
    if _updated:
        return
    if not is_root():
        raise DebianError(f"{reason}; apt's package lists are missing or stale: run `sudo apt-get update` and retry")
    log.info("apt-get update (%s)", reason)
    _run(["apt-get", "update"], "apt-get update", timeout=900)
    _updated = True


def candidate_version(package: str) -> str | None:
    """The version `apt-get download` would fetch, or None when apt does not know the package."""
    try:
        proc = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        return None
    m = re.search(r"Candidate:\s*(\S+)", proc.stdout)
    if not m or m.group(1) == "(none)":
        return None
    return m.group(1)


def deb_field(deb: Path, name: str) -> str:
    return _run(["dpkg-deb", "-f", str(deb), name], f"reading {name} of {deb.name}").stdout.strip()


def version_key(package: str, version: str) -> str:
    """`name_version` as a folder name (apt writes the epoch colon as %3a)."""
    return f"{package}_{version.replace(':', '%3a')}"


def _cached_debs(package: str, deb_dir: Path) -> list[Path]:
    return sorted(deb_dir.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)


def fetch_deb(package: str, deb_dir: Path) -> tuple[Path, str]:
    """(path of the package's .deb in deb_dir, its version); downloads only what the cache lacks."""
    deb_dir.mkdir(parents=True, exist_ok=True)
    version = candidate_version(package)
    if version is None and not _cached_debs(package, deb_dir):
        apt_update(f"apt does not know package {package!r}")
        version = candidate_version(package)
        if version is None:
            raise DebianError(f"package {package!r} is not available from the configured apt sources")
    if version is not None:
        for deb in _cached_debs(package, deb_dir):
            if deb.name.startswith(version_key(package, version) + "_"):
                return deb, version
        log.info("downloading %s %s", package, version)
        with tempfile.TemporaryDirectory(dir=deb_dir, prefix=".download-") as tmp:
            try:
                _run(["apt-get", "download", f"{package}={version}"], f"downloading {package}", cwd=Path(tmp))
            except DebianError:
                apt_update(f"downloading {package} {version} failed")
                _run(["apt-get", "download", f"{package}={version}"], f"downloading {package}", cwd=Path(tmp))
            got = list(Path(tmp).glob("*.deb"))
            if len(got) != 1:
                raise DebianError(f"downloading {package}: expected one .deb, found {[p.name for p in got]}")
            deb = deb_dir / got[0].name
            os.replace(got[0], deb)
        return deb, deb_field(deb, "Version")
    deb = _cached_debs(package, deb_dir)[-1]
    log.warning("apt does not know %s: using the cached %s", package, deb.name)
    return deb, deb_field(deb, "Version")


def unpack_deb(deb: Path, dest: Path) -> Path:
    """Unpack deb into dest (skipped when dest is complete); returns dest."""
    marker = dest / ".unpacked"
    if marker.exists():
        return dest
    with atomic_directory(dest) as tmp:
        _run(["dpkg-deb", "-x", str(deb), str(tmp)], f"unpacking {deb.name}")
        (tmp / ".unpacked").write_text(deb.name + "\n")
    return dest


# ---------------------------------------------------------------------------------------------------------------------
# Tools


TOOL_PACKAGES = {"fluidsynth": "fluidsynth", "openmpt123": "openmpt123"}


@dataclass
class Tool:
    """A runnable program: argv prefix, extra environment, version string."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    version: str = ""
    origin: str = ""  # "system" or the unpacked folder

    def run(self, args: list[str], what: str, timeout: float = 600, cwd: Path | None = None):
        env = dict(os.environ)
        for k, v in self.env.items():
            env[k] = v + (os.pathsep + env[k] if env.get(k) else "")
        return _run(self.argv + args, what, env=env, timeout=timeout, cwd=cwd)


def _tool_version(tool: Tool) -> str | None:
    args = ["--short-version"] if tool.name == "openmpt123" else ["--version"]
    try:
        out = tool.run(args, f"{tool.name} --version", timeout=60).stdout
    except DebianError as e:
        log.debug("%s does not run: %s", tool.name, e)
        return None
    if tool.name == "fluidsynth":
        m = re.search(r"version\s+(\d[\w.]*)", out)
        return m.group(1) if m else out.strip().splitlines()[0]
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def _system_tool(name: str) -> Tool | None:
    path = shutil.which(name)
    if not path:
        return None
    tool = Tool(name, [path], origin="system")
    v = _tool_version(tool)
    if v is None:
        return None
    tool.version = v
    return tool


def _missing_packages(packages: list[str]) -> list[tuple[str, str]]:
    """(name, version) of the packages `apt-get install` would add to this system for `packages`."""
    cmd = ["apt-get", "-s", "install", "--no-install-recommends", *packages]
    try:
        out = _run(cmd, "resolving dependencies").stdout
    except DebianError:
        apt_update(f"resolving the dependencies of {packages}")
        out = _run(cmd, "resolving dependencies").stdout
    return re.findall(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+)", out, flags=re.M)


def _unpacked_tools(names: list[str], cache_dir: Path) -> dict[str, Tool]:
    pkgs = [TOOL_PACKAGES[n] for n in names]
    missing = _missing_packages(pkgs)
    if not missing:
        raise DebianError(f"apt reports {pkgs} as installed, yet {names} are not on PATH")
    key = hashlib.sha1(" ".join(f"{n}={v}" for n, v in sorted(missing)).encode()).hexdigest()[:12]
    root = cache_dir / "tools" / f"{'+'.join(sorted(pkgs))}-{key}"
    if not (root / ".unpacked").exists():
        log.info("fetching %s (+%d libraries this system lacks) to run unpacked", pkgs, len(missing) - len(pkgs))
        with atomic_directory(root) as tmp:
            for name, _ in missing:
                deb, _v = fetch_deb(name, cache_dir / "debs")
                _run(["dpkg-deb", "-x", str(deb), str(tmp)], f"unpacking {deb.name}")
            (tmp / ".unpacked").write_text("\n".join(f"{n} {v}" for n, v in missing) + "\n")
    lib_dirs = sorted({str(p.parent) for p in root.rglob("*.so*") if p.is_file() or p.is_symlink()})
    tools = {}
    for n in names:
        binary = root / "usr" / "bin" / n
        tool = Tool(n, [str(binary)], env={"LD_LIBRARY_PATH": os.pathsep.join(lib_dirs)}, origin=str(root))
        tool.version = _tool_version(tool) or ""
        if not tool.version:
            raise DebianError(f"{n} unpacked under {root} does not run (missing libraries?)")
        tools[n] = tool
    return tools


def ensure_tools(names: list[str], cache_dir: Path) -> dict[str, Tool]:
    """Runnable fluidsynth / openmpt123 (see the module docstring for the order tried)."""
    tools: dict[str, Tool] = {}
    for n in names:
        t = _system_tool(n)
        if t:
            log.info("using %s %s from PATH", n, t.version)
            tools[n] = t
    todo = [n for n in names if n not in tools]
    if not todo:
        return tools
    try:
        # all tool packages together, so that every caller shares one unpacked folder
        unpacked = _unpacked_tools(sorted(TOOL_PACKAGES), cache_dir)
        tools.update({n: unpacked[n] for n in todo})
        return tools
    except DebianError as e:
        first_error = e
    if is_root() and os.environ.get("M2MV_NO_APT_INSTALL", "") in ("", "0"):
        log.warning("running %s unpacked failed (%s); installing them with apt-get install", todo, first_error)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run(["apt-get", "install", "-y", "--no-install-recommends", *[TOOL_PACKAGES[n] for n in todo]],
             "apt-get install", env=env)
        for n in todo:
            t = _system_tool(n)
            if t is None:
                raise DebianError(f"{n} still does not run after apt-get install")
            tools[n] = t
        return tools
    raise DebianError(
        f"cannot run {todo}: {first_error}. Install them (`sudo apt-get install fluidsynth openmpt123`) and retry"
    )
