"""The demo corpus's sources: the Debian packages of real music, their licences, and their tracks.

- :data:`SOURCES` / :data:`SUBSETS`: which packages, what kind of files (OGG, MIDI, tracker modules), their genre;
- :class:`CopyrightInfo`: a package's Debian copyright file, looked up per file where it is machine-readable (DEP-5);
- :func:`enumerate_tracks`: every candidate track of an unpacked package, with title, licence and attribution.
"""

from __future__ import annotations

import difflib
import fnmatch
import gzip
import hashlib
import logging
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from dataset_scripts.debian import version_key
from m2mv.data.fileio import atomic_directory
from m2mv.errors import CorpusError

log = logging.getLogger("m2mv.demo_corpus")


@dataclass(frozen=True)
class SourceSpec:
    package: str
    kind: str  # "ogg" (read as is), "midi" (fluidsynth), "module" (openmpt123)
    patterns: tuple[str, ...]  # globs relative to the package root, or to the archive root when `archive` is set
    genre: str  # from the genre / mood column of demo-corpus.md
    licence: str  # used when the copyright file is not machine-readable (DEP-5)
    archive: str | None = None  # a zip (.pk3) inside the package holding the files
    small_tracks: int = 10  # tracks taken when the subset is limited ("small")
    attribution: str | None = None  # package-level credit, for files that name no author


SOURCES: dict[str, SourceSpec] = {
    s.package: s
    for s in (
        SourceSpec("openttd-openmsx", "midi", ("usr/share/games/openttd/baseset/openmsx/*.mid",),
                   "jazz, blues, ragtime", "GPL-2", small_tracks=12),
        SourceSpec("pingus-data", "module", ("usr/share/games/pingus/data/music/*.it",
                                             "usr/share/games/pingus/data/music/*.s3m"),
                   "tracker / chiptune", "GPL-2+", small_tracks=8),
        SourceSpec("nexuiz-music", "ogg", ("sound/cdtracks/*.ogg",), "techno, industrial, drum'n'bass", "GPL-2+",
                   archive="usr/share/games/nexuiz/data/music.pk3", small_tracks=10,
                   attribution="Nexuiz, (c) 2002-2009 Alientrap, Lee Vermeulen"),
        SourceSpec("wesnoth-1.16-music", "ogg", ("usr/share/games/wesnoth/*/data/core/music/*.ogg",),
                   "orchestral fantasy, Celtic/folk", "GPL-2+", small_tracks=10),
        SourceSpec("supertux-data", "ogg", ("usr/share/games/supertux2/music/*/*.ogg",),
                   "cheerful platformer, retro/chip-style", "GPL-2+", small_tracks=10),
        SourceSpec("ufoai-music", "ogg", ("music/*.ogg",), "sci-fi orchestral, ambient, electronic",
                   "GPL-2+ (per file: see the copyright file)", archive="usr/share/games/ufoai/base/0music.pk3",
                   small_tracks=10),
    )
}

SUBSETS = {
    "small": {"sources": ["openttd-openmsx", "pingus-data", "nexuiz-music"], "clips_per_track": 1, "limited": True},
    "full": {"sources": list(SOURCES), "clips_per_track": 2, "limited": False},
}



def genre_tags(genre: str) -> list[str]:
    """"orchestral fantasy, Celtic/folk" -> ["orchestral fantasy", "Celtic", "folk"]."""
    return [t.strip() for t in re.split(r"[,/]", genre) if t.strip()]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "track"



# ---------------------------------------------------------------------------------------------------------------------
# Licences: Debian copyright files


@dataclass
class CopyrightInfo:
    """A package's copyright file; `lookup` gives (licence, copyright holders) of one file when it is DEP-5."""

    text: str
    default_licence: str
    paragraphs: list[dict] = field(default_factory=list)  # DEP-5 "Files" paragraphs, in file order

    @classmethod
    def parse(cls, text: str, default_licence: str) -> "CopyrightInfo":
        info = cls(text, default_licence)
        if not text.startswith("Format:") or "copyright-format" not in text.split("\n", 1)[0]:
            return info
        for block in re.split(r"\n\s*\n", text):
            fields, key = {}, None
            for line in block.splitlines():
                if line and not line[0].isspace() and ":" in line:
                    key, _, value = line.partition(":")
                    key = key.strip()
                    fields[key] = [value.strip()] if value.strip() else []
                elif key and line.strip() and line.strip() != ".":
                    fields[key].append(line.strip())
            if "Files" in fields and "License" in fields:
                patterns = " ".join(fields["Files"]).split()
                info.paragraphs.append(
                    {"files": patterns, "licence": fields["License"][0] if fields["License"] else "",
                     "copyright": "; ".join(fields.get("Copyright", []))}
                )
        return info

    @staticmethod
    def _match_score(pattern: str, path: str) -> int:
        """-1 when the DEP-5 glob (where * crosses /) does not match path, else how specific the match is (its literal
        characters). The path's leading folders may differ from the source tree's (installed under usr/share/...,
        or a member of a .pk3): a pattern's trailing folders may match the end of the path, keeping at least one
        folder (so "data/music/*" matches ".../supertux2/music/x.ogg", and "debian/*" matches nothing here)."""
        if pattern == "*":
            return 0
        parts = path.split("/")
        pp = pattern.split("/")
        for cand in [pattern] + ["/".join(pp[i:]) for i in range(1, len(pp) - 1)]:
            if any(fnmatch.fnmatchcase("/".join(parts[i:]), cand) for i in range(len(parts))):
                return len(re.sub(r"[*?]|\[[^]]*\]", "", cand))
        return -1

    def lookup(self, path: str) -> tuple[str, str | None]:
        """(licence, copyright holders) of path: the most specific matching Files paragraph, the last one among
        equally specific ones (DEP-5's "last match wins" for the usual general-to-specific order)."""
        best, licence, holders = -1, self.default_licence, None
        for para in self.paragraphs:
            score = max(self._match_score(p, path) for p in para["files"])
            if score >= 0 and score >= best:
                best, licence, holders = score, para["licence"], para["copyright"] or None
        return licence, holders


# ---------------------------------------------------------------------------------------------------------------------
# Tracks


@dataclass
class Track:
    package: str
    version: str
    kind: str
    source_file: str  # path in the package (archive members: "<archive>!<member>")
    track_key: str  # unique within the package, used in the clip id
    path: str  # absolute path of the file to read or render
    genre: str
    licence: str
    copyright_holders: str | None = None
    title: str | None = None
    artist: str | None = None
    attribution: str | None = None
    attribution_source: str | None = None
    render: dict | None = None  # renderer settings (MIDI, modules)


def _glob_files(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    found = set()
    for pat in patterns:
        found.update(p for p in root.glob(pat) if p.is_file())
    return sorted(found)


def _extract_archive(archive: Path, patterns: tuple[str, ...], dest: Path, what: str) -> Path:
    """Extract the members matching patterns (atomically, once)."""
    if (dest / ".extracted").exists():
        return dest
    with atomic_directory(dest) as tmp:
        try:
            with zipfile.ZipFile(archive) as z:
                for name in z.namelist():
                    if any(fnmatch.fnmatchcase(name, p) for p in patterns):
                        z.extract(name, tmp)
        except (zipfile.BadZipFile, OSError) as e:
            raise CorpusError(f"{what}: cannot extract {archive.name}: {e}") from e
        (tmp / ".extracted").write_text(archive.name + "\n")
    return dest


def _ogg_tags(path: Path) -> dict:
    try:
        with sf.SoundFile(str(path)) as f:
            return {k: v.strip() for k, v in f.copy_metadata().items() if isinstance(v, str) and v.strip()}
    except (sf.LibsndfileError, RuntimeError, OSError):
        return {}


def _title_from_name(stem: str) -> str:
    return re.sub(r"[_-]+", " ", stem).strip().title()


def _ini_section(text: str, section: str) -> dict[str, str]:
    m = re.search(rf"^\[{re.escape(section)}\]\s*$(.*?)(?=^\[|\Z)", text, flags=re.M | re.S)
    out = {}
    for line in (m.group(1) if m else "").splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def _openmsx_metadata(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(file -> title, file -> composer) from OpenMSX's openmsx.obm and the credits of its readme.txt."""
    obm_files = list(root.glob("usr/share/games/openttd/baseset/openmsx/*.obm"))
    obm = obm_files[0].read_text(encoding="utf-8", errors="replace") if obm_files else ""
    names = _ini_section(obm, "names")
    slots = {v: k for k, v in _ini_section(obm, "files").items()}  # file -> slot (theme, old_0, new_3, ezy_5, ...)
    readme = ""
    for p in root.glob("usr/share/doc/openttd-openmsx/readme.txt*"):
        readme = (gzip.open(p, "rt", errors="replace") if p.suffix == ".gz" else p.open(errors="replace")).read()
    by_title, set_author = {}, {}
    m = re.search(r"Musicians:\n(.*?)(?:\n\s*\n\s*\n|Song notes:)", readme, flags=re.S)
    pending: list[str] = []
    for line in (m.group(1) if m else "").splitlines():
        indent, text = len(line) - len(line.lstrip()), line.strip()
        if not text:
            continue
        if indent <= 2:
            pending.append(text)
        else:
            for t in pending:
                sm = re.match(r"All '(.+)' tracks", t)
                if sm:
                    set_author[sm.group(1).lower()] = text
                else:
                    by_title[t.lower()] = text
            pending = []
    set_prefix = {"ezy street": "ezy_", "modern": "new_"}  # OpenMSX's sets and their slot names in openmsx.obm
    composers = {}
    for file, title in names.items():
        hit = difflib.get_close_matches(title.lower(), list(by_title), n=1, cutoff=0.85)
        if hit:
            composers[file] = by_title[hit[0]]
            continue
        for set_name, author in set_author.items():
            prefix = set_prefix.get(set_name)
            if prefix and slots.get(file, "").startswith(prefix):
                composers[file] = author
    return names, composers


def _pingus_musicians(root: Path) -> list[str]:
    credits = next(iter(root.glob("usr/share/games/pingus/data/credits/*.credits")), None)
    if credits is None:
        return []
    out, inside = [], False
    for line in credits.read_text(errors="replace").splitlines():
        if line.strip().lower() == "-music":
            inside = True
        elif inside and line.startswith("_"):
            out.append(line[1:].strip())
        elif inside:
            break
    return out


def _unique_keys(paths: list[str]) -> dict[str, str]:
    """Track keys: the file stem, prefixed by its folder where stems repeat within the package."""
    stems = Counter(Path(p).stem for p in paths)
    return {p: (f"{Path(p).parent.name}-{Path(p).stem}" if stems[Path(p).stem] > 1 else Path(p).stem) for p in paths}


def enumerate_tracks(spec: SourceSpec, version: str, root: Path, cache_dir: Path) -> tuple[list[Track], CopyrightInfo]:
    """All candidate tracks of an unpacked package, with title, licence and attribution."""
    what = f"{spec.package} {version}"
    copyright_path = root / "usr" / "share" / "doc" / spec.package / "copyright"
    text = copyright_path.read_text(encoding="utf-8", errors="replace") if copyright_path.exists() else ""
    if not text:
        log.warning("%s: no copyright file; recording the licence %r", what, spec.licence)
    cinfo = CopyrightInfo.parse(text, spec.licence)

    if spec.archive:
        archive = root / spec.archive
        if not archive.exists():
            raise CorpusError(f"{what}: archive {spec.archive} not found in the package")
        base = _extract_archive(archive, spec.patterns, cache_dir / "extracted" / version_key(spec.package, version),
                                what)
        files = _glob_files(base, spec.patterns)
        rel = {str(f): f"{spec.archive}!{f.relative_to(base).as_posix()}" for f in files}
        lookup_path = {str(f): f.relative_to(base).as_posix() for f in files}
    else:
        files = _glob_files(root, spec.patterns)
        rel = {str(f): f.relative_to(root).as_posix() for f in files}
        lookup_path = rel
    if not files:
        raise CorpusError(f"{what}: no files match {list(spec.patterns)} (package layout changed?)")
    keys = _unique_keys([rel[str(f)] for f in files])

    extra_titles, composers, musicians = {}, {}, []
    if spec.package == "openttd-openmsx":
        extra_titles, composers = _openmsx_metadata(root)
    if spec.package == "pingus-data":
        musicians = _pingus_musicians(root)

    tracks = []
    for f in files:
        licence, holders = cinfo.lookup(lookup_path[str(f)])
        t = Track(spec.package, version, spec.kind, rel[str(f)], keys[rel[str(f)]], str(f), spec.genre, licence,
                  copyright_holders=holders)
        if spec.kind == "ogg":
            tags = _ogg_tags(f)
            t.title = tags.get("title")
            t.artist = tags.get("artist")
            if tags.get("copyright") or tags.get("artist"):
                t.attribution = tags.get("copyright") or tags["artist"]
                t.attribution_source = "file tags"
        elif spec.kind == "midi":
            t.title = extra_titles.get(f.name)
            if f.name in composers:
                t.artist = t.attribution = composers[f.name]
                t.attribution_source = "readme.txt credits"
        elif spec.kind == "module" and musicians:
            t.attribution = "Pingus musicians: " + ", ".join(musicians)
            t.attribution_source = "package credits (not per file)"
        if not t.attribution and holders:
            t.attribution, t.attribution_source = holders, "copyright file"
        if not t.attribution and spec.attribution:
            t.attribution, t.attribution_source = spec.attribution, "copyright file (package, not per file)"
        t.title = t.title or _title_from_name(f.stem)
        tracks.append(t)
    return tracks, cinfo


def candidate_order(tracks: list[Track]) -> list[Track]:
    """A fixed pseudo-random order (by hash of package and track key): the small subset takes tracks from its head."""
    return sorted(tracks, key=lambda t: hashlib.sha1(f"{t.package}/{t.track_key}".encode()).hexdigest())
