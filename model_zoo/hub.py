"""Fetching, caching and safely reading checkpoints.

Downloads go through iopath's ``PathManager`` (``HTTPURLHandler``). That handler
caches by itself, but its cache neither verifies content nor names files uniquely
(every published FBNet URL ends in ``model.pth``), and a download that completes
with the wrong bytes stays there. So it is used as the transport only: each
download goes into a fresh staging folder inside the cache folder (iopath's own
cache, ``.tmp`` and ``.lock`` files land there too), is verified (sha256 where
known, loadable with ``torch.load(weights_only=True)`` as a dict of tensors, and
whatever check the caller adds, e.g. "fits the model"), and only then moved into
place with ``os.replace`` (atomic on one filesystem). The staging folder is
removed whatever happens, so a failed, truncated, corrupt or rejected download
leaves nothing behind and never replaces a good cached file.

The cache folder is ``cache_dir`` if given, else ``$FBNET_CACHE``, else
``<torch.hub.get_dir()>/checkpoints/fbnetv2``.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import pickle
import re
import shutil
import tempfile
from typing import Callable, Dict, Optional, TypeVar
from urllib.parse import urlparse

import torch
from iopath.common.file_io import HTTPURLHandler, PathManager

from mobile_cv.checkpoint import CheckpointMismatchError, extract_state_dict
from mobile_cv.errors import UserError

logger = logging.getLogger(__name__)

CACHE_ENV = "FBNET_CACHE"

T = TypeVar("T")
StateDict = Dict[str, torch.Tensor]

_PATH_MANAGER = PathManager()
_PATH_MANAGER.register_handler(HTTPURLHandler())
_PATH_MANAGER.set_logging(False)  # iopath telemetry: nothing to report to


class ModelZooError(UserError, RuntimeError):
    """Getting pretrained weights failed; the message names the file or URL and the fix."""


class DownloadError(ModelZooError):
    """The URL could not be downloaded (HTTP error, connection refused, cut short)."""


class ChecksumError(ModelZooError):
    """A file's sha256 is not the one recorded for it."""


class CheckpointFormatError(ModelZooError):
    """A file is not a checkpoint this loader accepts (corrupt, not PyTorch, or holds code)."""


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
        CheckpointFormatError: not loadable with ``torch.load(weights_only=True)``, or
            not a dict of tensors (see :func:`mobile_cv.checkpoint.extract_state_dict`).
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
        # weights_only: unpickling arbitrary objects can run arbitrary code.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises anything from EOFError to KeyError on bad bytes
        raise CheckpointFormatError(_describe_load_failure(source, e)) from None
    try:
        return extract_state_dict(obj, source)
    except CheckpointMismatchError as e:
        raise CheckpointFormatError(f"{e}; expected a state dict or a checkpoint dict holding one") from None


def _describe_load_failure(source: str, error: Exception) -> str:
    refused = re.search(r"GLOBAL (\S+) was not an allowed global", str(error))
    if isinstance(error, pickle.UnpicklingError) and refused:
        return (
            f"{source}: refused to load: it references the Python object {refused.group(1)}. Checkpoints are "
            f"loaded with torch.load(weights_only=True), which unpickles only tensors and plain containers, "
            f"because unpickling other objects can run arbitrary code. If you trust the file, re-save its "
            f"weights as a plain state dict: torch.save(model.state_dict(), path)."
        )
    # torch's own message suggests weights_only=False, the one thing not to do with an unknown file
    unpickler = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(error))
    detail = unpickler.group(1) if unpickler else (str(error).strip().splitlines() or [""])[0]
    return (
        f"{source}: not a readable PyTorch checkpoint ({type(error).__name__}: {detail[:200]}). "
        f"It is truncated, corrupt or another kind of file (torch.load(weights_only=True) reads only "
        f"tensors and plain containers)."
    )


def fetch_checkpoint(
    url: str,
    cache_dir: Optional[str] = None,
    sha256: Optional[str] = None,
    name: Optional[str] = None,
    force_download: bool = False,
    prepare: Optional[Callable[[StateDict], T]] = None,
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
            download is not cached (e.g. a checkpoint of another architecture).

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
    return _download(url, cached, sha256, prepare)


def _download(url: str, dest: str, sha256: Optional[str], prepare: Callable[[StateDict], T]) -> T:
    cache_dir = os.path.dirname(dest)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".download-", dir=cache_dir)
    except OSError as e:
        raise ModelZooError(
            f"cannot write to the cache folder {cache_dir} ({e}); pass cache_dir= or set ${CACHE_ENV} to a "
            f"writable folder"
        ) from None
    if sha256 is None:
        logger.info("no sha256 recorded for %s: checking only that it is a state dict that fits", url)
    try:
        try:
            local = _PATH_MANAGER.get_local_path(url, force=True, cache_dir=staging)
        except (OSError, http.client.HTTPException) as e:  # urllib's HTTPError, ContentTooShortError, ...
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
