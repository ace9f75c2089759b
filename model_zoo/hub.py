"""Fetching, caching and safely reading checkpoints.

Downloads are streamed with urllib under a timeout (:data:`DEFAULT_TIMEOUT` seconds, or
``$FBNET_DOWNLOAD_TIMEOUT``, or ``timeout=``) that bounds the connection and every
read: a server that goes silent before its headers or in the middle of the body is
given up on within that time. (iopath's HTTP handler, used before, has no timeout: a
stalled server hung the download forever.)

Each download goes into a fresh staging folder inside the cache folder, is verified
(sha256 where known, a ``.safetensors`` file or one loadable with ``torch.load(weights_only=True)``, as a dict of
tensors, and whatever check the caller adds, e.g. "fits the model"), and only then
moved into place with ``os.replace`` (atomic on one filesystem). The staging folder is
removed whatever happens, so a failed, stalled, truncated, corrupt or rejected download
leaves nothing behind and never replaces a good cached file; staging folders of a
killed process (its pid is in the name) are removed by the next download.

The cache folder is ``cache_dir`` if given, else ``$FBNET_CACHE``, else
``<torch.hub.get_dir()>/checkpoints/fbnetv2``.
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from typing import Callable, Dict, Optional, TypeVar
from urllib.parse import urlparse

import torch
from tqdm import tqdm

from mobile_cv.arch.weights import WeightsMismatchError, describe_load_failure, extract_state_dict, read_weights_file
from mobile_cv.errors import UserError

logger = logging.getLogger(__name__)

CACHE_ENV = "FBNET_CACHE"
TIMEOUT_ENV = "FBNET_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT = 30.0  # seconds of silence (connecting, or between two reads) before giving up

T = TypeVar("T")
StateDict = Dict[str, torch.Tensor]


class ModelZooError(UserError, RuntimeError):
    """Getting pretrained weights failed; the message names the file or URL and the fix."""


class DownloadError(ModelZooError):
    """The URL could not be downloaded (HTTP error, connection refused, cut short)."""


class ChecksumError(ModelZooError):
    """A file's sha256 is not the one recorded for it."""


class WeightsFormatError(ModelZooError):
    """A file is not a weights file this loader accepts (corrupt, not PyTorch, or holds code)."""


CheckpointFormatError = WeightsFormatError  # its name in 0.1 ("checkpoint" now means a run's state)


def default_cache_dir() -> str:
    """``$FBNET_CACHE`` if set, else ``<torch hub dir>/checkpoints/fbnetv2``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return os.path.expanduser(env)
    return os.path.join(torch.hub.get_dir(), "checkpoints", "fbnetv2")


def is_url(path: str) -> bool:
    return isinstance(path, str) and path.startswith(("http://", "https://"))


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_filename(url: str, name: Optional[str] = None) -> str:
    """A cache file name unique to ``url``: ``<name or URL file stem>-<url hash>.<ext>``."""
    base = os.path.basename(urlparse(url).path) or "checkpoint.pth"
    stem, ext = os.path.splitext(base)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name or stem)
    return f"{stem}-{hashlib.sha256(url.encode()).hexdigest()[:16]}{ext or '.pth'}"


def read_state_dict(path: str, sha256: Optional[str] = None, source: Optional[str] = None) -> StateDict:
    """Verify and load a checkpoint file into a flat state dict.

    Args:
        path: local file.
        sha256: expected hex digest; None skips the hash check.
        source: how to name the file in errors (default: ``path``).

    Raises:
        ChecksumError: the digest differs.
        WeightsFormatError: not loadable with ``torch.load(weights_only=True)``, or
            not a dict of tensors (see :func:`mobile_cv.arch.weights.extract_state_dict`).
    """
    source = source or path
    if sha256 is not None:
        got = sha256_of(path)
        if got != sha256:
            raise ChecksumError(
                f"{source}: sha256 is {got}, expected {sha256}. The file is corrupt or was replaced; "
                f"download it again, or update the recorded sha256 if the new file is trusted."
            )
    try:
        # safetensors, or torch.load(weights_only=True): unpickling arbitrary objects can run arbitrary code
        obj = read_weights_file(path)
    except Exception as e:  # torch raises anything from EOFError to KeyError on bad bytes
        raise WeightsFormatError(describe_load_failure(source, e)) from None
    try:
        return extract_state_dict(obj, source)
    except WeightsMismatchError as e:
        raise WeightsFormatError(f"{e}; expected a state dict or a checkpoint dict holding one") from None


def fetch_weights(
    url: str,
    cache_dir: Optional[str] = None,
    sha256: Optional[str] = None,
    name: Optional[str] = None,
    force_download: bool = False,
    prepare: Optional[Callable[[StateDict], T]] = None,
    timeout: Optional[float] = None,
) -> T:
    """The state dict at ``url``, downloaded once into the cache.

    Args:
        url: http(s) URL of a checkpoint.
        cache_dir: cache folder (default: :func:`default_cache_dir`).
        sha256: expected hex digest of the file, if known.
        name: readable prefix of the cache file name (e.g. the zoo entry).
        force_download: download even if a verified copy is cached; the cached copy
            is replaced only by a download that passes every check.
        prepare: called on the state dict, its result returned; if it raises, a fresh
            download is not cached (e.g. the weights of another architecture).
        timeout: seconds the server may stay silent (connecting or mid-body) before the
            download fails (default: ``$FBNET_DOWNLOAD_TIMEOUT`` or :data:`DEFAULT_TIMEOUT`).

    Returns:
        ``prepare(state_dict)``, or the state dict itself without ``prepare``.
    """
    prepare = prepare or (lambda sd: sd)  # type: ignore[assignment, return-value]
    cache_dir = os.path.abspath(cache_dir or default_cache_dir())
    cached = os.path.join(cache_dir, cache_filename(url, name))
    if os.path.isfile(cached) and not force_download:
        try:
            state_dict = read_state_dict(cached, sha256, source=f"cached {cached} (from {url})")
        except ModelZooError as e:
            # Only verified files are put in the cache, so it was damaged or the recorded hash changed.
            logger.warning("%s; removing it and downloading again", e)
            os.remove(cached)
        else:
            logger.info("using %s (cached from %s)", cached, url)
            return prepare(state_dict)
    return _download(url, cached, sha256, prepare, download_timeout(timeout))


fetch_checkpoint = fetch_weights  # its name in 0.1


def download_timeout(timeout: Optional[float] = None) -> float:
    """``timeout``, else ``$FBNET_DOWNLOAD_TIMEOUT``, else :data:`DEFAULT_TIMEOUT` (seconds, > 0)."""
    if timeout is None:
        env = os.environ.get(TIMEOUT_ENV)
        try:
            timeout = float(env) if env else DEFAULT_TIMEOUT
        except ValueError:
            raise ModelZooError(f"${TIMEOUT_ENV} must be a number of seconds, got {env!r}") from None
    if not 0 < timeout < float("inf"):
        raise ModelZooError(f"the download timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned_downloads(cache_dir: str) -> None:
    """Staging folders of downloads whose process is gone (killed before it could clean up)."""
    for path in glob.glob(os.path.join(glob.escape(cache_dir), ".download-*")):
        m = re.match(r"\.download-(\d+)-", os.path.basename(path))
        if m is None or not _pid_alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def progress_bar(total: Optional[int], desc: str, stream=None) -> tqdm:
    """A byte progress bar (size, speed, ETA) on ``stream`` (stderr), silent when that is not a terminal."""
    stream = stream or sys.stderr
    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=stream,
        disable=not (hasattr(stream, "isatty") and stream.isatty()),
        leave=False,
    )


def _stream(url: str, path: str, timeout: float) -> None:
    """GET ``url`` into ``path`` with a progress bar; ``timeout`` bounds connecting and every read."""
    with urllib.request.urlopen(url, timeout=timeout) as r, open(path, "wb") as f:
        expected = r.headers.get("Content-Length")
        got = 0
        with progress_bar(int(expected) if expected else None, os.path.basename(urlparse(url).path)) as bar:
            for chunk in iter(lambda: r.read(1 << 16), b""):
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
        if expected is not None and got != int(expected):
            raise urllib.error.ContentTooShortError(f"retrieval incomplete: got {got} of {expected} bytes", None)


def _download(url: str, dest: str, sha256: Optional[str], prepare: Callable[[StateDict], T], timeout: float) -> T:
    cache_dir = os.path.dirname(dest)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        remove_abandoned_downloads(cache_dir)
        staging = tempfile.mkdtemp(prefix=f".download-{os.getpid()}-", dir=cache_dir)
    except OSError as e:
        raise ModelZooError(
            f"cannot write to the cache folder {cache_dir} ({e}); pass cache_dir= or set ${CACHE_ENV} to a "
            f"writable folder"
        ) from None
    if sha256 is None:
        logger.info("no sha256 recorded for %s: checking only that it is a state dict that fits", url)
    try:
        local = os.path.join(staging, os.path.basename(dest))
        try:
            try:
                _stream(url, local, timeout)
            except urllib.error.URLError as e:  # a connect timeout arrives wrapped
                if isinstance(e.reason, (socket.timeout, TimeoutError)):
                    raise TimeoutError(str(e.reason)) from None
                raise
        except (socket.timeout, TimeoutError) as e:
            raise DownloadError(
                f"downloading {url} failed: the server sent nothing for {timeout:g} s ({e}). Try again later, or "
                f"raise the timeout (${TIMEOUT_ENV}); nothing was written to {cache_dir}."
            ) from None
        except (OSError, http.client.HTTPException) as e:  # urllib's HTTPError, URLError, ContentTooShortError
            raise DownloadError(
                f"downloading {url} failed: {e}. Check the URL and the connection; nothing was written to {cache_dir}."
            ) from None
        state_dict = read_state_dict(local, sha256, source=f"download of {url}")
        result = prepare(state_dict)
        os.replace(local, dest)
        logger.info("downloaded %s to %s", url, dest)
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)
