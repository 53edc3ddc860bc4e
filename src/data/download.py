"""Download the thesis' public test sets into paths.data_dir, verifying their checksums.

    python -m src.data.download imagenet-r imagenet-a imagenet-v2 [--dest data]

Each archive is streamed to ``<dest>/<file>.part``, its MD5 compared with the value
the publisher's archive is known by, then renamed and unpacked into the folder the
``imagenet`` source expects (``imagenet-r/``, ``imagenet-a/``,
``imagenetv2-matched-frequency-format-val/``). A finished archive is reused by a
later call. ImageNet-V2's release publishes no checksum: the command prints the MD5
it computed and unpacks only once that value is passed back with ``--md5`` (check
it first) -- nothing is unpacked unverified. Nothing here runs during a training run.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Published:
    url: str
    md5: str | None  # None: the publisher gives none
    folder: str  # what the archive unpacks to


DATASETS = {
    "imagenet-v2": Published(
        "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/imagenetv2-matched-frequency.tar.gz",
        None,
        "imagenetv2-matched-frequency-format-val",
    ),
    "imagenet-r": Published(
        "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",
        "a61312130a589d0ca1a8fca1f2bd3337",
        "imagenet-r",
    ),
    "imagenet-a": Published(
        "https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar",
        "c3e55429088dc681f30d81f4726b6595",
        "imagenet-a",
    ),
}


class DownloadError(RuntimeError):
    pass


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _stream(url: str, target: Path, timeout: float) -> None:
    part = target.with_name(target.name + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        while block := response.read(1 << 20):
            out.write(block)
            done += len(block)
            if total and sys.stderr.isatty():
                print(
                    f"\r{target.name}: {done / 2**20:.0f} / {total / 2**20:.0f} MB", end="", file=sys.stderr
                )
    if total and sys.stderr.isatty():
        print(file=sys.stderr)
    part.replace(target)


def fetch(
    name: str, dest: str | Path, url: str | None = None, md5: str | None = None, timeout: float = 60.0
) -> Path:
    """Download (unless already there), verify and unpack one data set; returns its folder."""
    if name not in DATASETS:
        raise DownloadError(f"unknown data set {name!r}; allowed: {', '.join(DATASETS)}")
    published = DATASETS[name]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    url = url or published.url
    expected = (md5 or published.md5 or "").lower() or None
    archive = dest / url.rstrip("/").rsplit("/", 1)[-1].split("?")[0]
    if not archive.exists():
        print(f"downloading {url} -> {archive}", file=sys.stderr)
        _stream(url, archive, timeout)
    actual = md5_of(archive)
    if expected is None:
        raise DownloadError(
            f"{name}: the publisher gives no checksum; {archive} has MD5 {actual}. Check it, then "
            f"run again with --md5 {actual} to unpack"
        )
    if actual != expected:
        archive.unlink()
        raise DownloadError(
            f"{name}: checksum mismatch for {url}: MD5 {actual}, expected {expected}; "
            "the corrupt download was deleted, run again"
        )
    with tarfile.open(archive, "r:*") as tar:
        if hasattr(tarfile, "data_filter"):  # refuse absolute paths, '..' and links out of dest
            tar.extractall(dest, filter="data")
        else:  # pragma: no cover - Python without extraction filters
            tar.extractall(dest)
    folder = dest / published.folder
    if not folder.is_dir():
        raise DownloadError(f"{name}: {archive} did not unpack to {folder}")
    print(f"{name}: verified and unpacked into {folder}", file=sys.stderr)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.data.download", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", choices=[*DATASETS, "all"], help="data sets to fetch")
    parser.add_argument(
        "--dest", default="data", help="folder to unpack into (paths.data_dir; default: data)"
    )
    parser.add_argument("--url", help="another address of the archive (a mirror); one data set only")
    parser.add_argument(
        "--md5", help="the archive's expected MD5 (required for imagenet-v2); one data set only"
    )
    args = parser.parse_args(argv)
    names = list(DATASETS) if "all" in args.names else args.names
    if (args.url or args.md5) and len(names) != 1:
        parser.error("--url and --md5 apply to one data set at a time")
    try:
        for name in names:
            fetch(name, args.dest, url=args.url, md5=args.md5)
    except (DownloadError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
