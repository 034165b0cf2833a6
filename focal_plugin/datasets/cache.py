"""Where generated datasets are cached, and how a folder is published atomically.

A generated dataset is written into a hidden temporary folder beside its final
place and renamed into place only when complete (``os.rename`` of a folder is
atomic on POSIX file systems), so a reader never sees half a dataset and an
interrupted run leaves no folder at the final place. Several processes (the
ranks of a distributed run) may prepare the same dataset at once: a file lock
lets one of them do the work while the others wait, and where locks are not
available the rename still decides a single winner.
"""
import contextlib
import errno
import json
import os
import os.path as osp
import shutil
import tempfile
import time
from hashlib import sha256
from typing import Callable, Iterator, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover  (Windows: the rename alone decides)
    fcntl = None

#: Environment variable naming the folder that holds the generated datasets.
CACHE_ENV = 'FOCAL_PLUGIN_DATA_CACHE'
#: Name of the file that describes a finished dataset folder.
MANIFEST = 'manifest.json'


def default_cache_dir() -> str:
    """The folder that holds generated datasets.

    Returns:
        str: ``$FOCAL_PLUGIN_DATA_CACHE`` if set, else
        ``~/.cache/focal_plugin/datasets``.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return osp.abspath(osp.expanduser(env))
    return osp.join(osp.expanduser('~'), '.cache', 'focal_plugin', 'datasets')


def read_manifest(root: str) -> Optional[dict]:
    """The manifest of a finished dataset folder.

    Args:
        root (str): Dataset folder.

    Returns:
        dict, optional: The parsed manifest, or None when the folder or its
        manifest is missing or unreadable.
    """
    try:
        with open(osp.join(root, MANIFEST), encoding='utf-8') as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def write_manifest(root: str, manifest: dict) -> None:
    """Writes ``manifest`` into ``root`` with a byte-stable layout.

    Args:
        root (str): Dataset folder.
        manifest (dict): JSON-serialisable description of the dataset.
    """
    with open(osp.join(root, MANIFEST), 'w', encoding='utf-8') as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write('\n')


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
    """Holds an exclusive advisory lock on ``path`` (created if needed).

    Without ``fcntl`` (Windows) the block runs unlocked; callers must then
    rely on :func:`publish_dir` to resolve races.

    Args:
        path (str): Lock file.
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path, 'a+') as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def make_temp_dir(root: str) -> str:
    """Creates an empty hidden folder beside ``root`` to build it in.

    Being on the same file system as ``root`` makes the final rename atomic.

    Args:
        root (str): The final folder.

    Returns:
        str: The new temporary folder.
    """
    parent, name = osp.split(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f'.{name}.tmp-', dir=parent)
    # mkdtemp makes the folder private (0700); the published dataset gets the
    # permissions of any folder this process creates.
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp_dir, 0o777 & ~umask)
    return tmp_dir


def publish_dir(tmp_dir: str, root: str) -> bool:
    """Renames the finished ``tmp_dir`` to ``root`` in one atomic step.

    An empty folder at ``root`` is replaced. If another process published
    ``root`` first, ``tmp_dir`` is deleted and the other one's folder kept.

    Args:
        tmp_dir (str): The complete dataset, beside ``root``.
        root (str): The final folder.

    Returns:
        bool: True if this call published ``tmp_dir``, False if ``root``
        already held a finished dataset (the caller checks it matches).
    """
    try:
        os.rename(tmp_dir, root)
        return True
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
            raise
    # Another process won the race; ours is redundant.
    shutil.rmtree(tmp_dir, ignore_errors=True)
    return False


def holds_dataset(root: str, name: str, version: int, params: Optional[dict] = None) -> bool:
    """Whether ``root`` holds a finished dataset ``name`` of generator ``version``.

    Args:
        root (str): Dataset folder.
        name (str): The dataset's name, as its manifest states it.
        version (int): Its generator's version.
        params (dict, optional): If given, the dataset must also have been
            generated with these canonical parameters. Defaults to None.

    Returns:
        bool: True if the folder's manifest names this dataset and version
        (and ``params``).
    """
    manifest = read_manifest(root)
    if manifest is None or manifest.get('name') != name or manifest.get('version') != version:
        return False
    return params is None or manifest.get('params') == params


def cache_folder(name: str, version: int, params: Optional[dict] = None,
                 default_params: Optional[dict] = None) -> str:
    """The cache folder of dataset ``name`` generated with ``params``.

    Args:
        name (str): The dataset's name.
        version (int): Its generator's version.
        params (dict, optional): Canonical parameters; None means the
            defaults. Defaults to None.
        default_params (dict, optional): The canonical default parameters.
            Defaults to None.

    Returns:
        str: ``<cache>/<name>_v<version>`` for the default parameters, with a
        short hash of the parameters appended otherwise, where ``<cache>`` is
        :func:`default_cache_dir`.
    """
    folder = f'{name}_v{version}'
    if params is not None and params != default_params:
        digest = sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
        folder = f'{folder}_{digest}'
    return osp.join(default_cache_dir(), folder)


def generated_data_root(data_root: Optional[str], generator_cfg: Optional[dict],
                        name: str, version: int, prepare: Callable[..., str]) -> str:
    """The folder a dataset class over a generated dataset reads.

    A ``data_root`` that already holds the dataset is used as it is unless
    ``generator_cfg`` asks for specific parameters; otherwise the dataset is
    prepared there (or in the cache when ``data_root`` is None).

    Args:
        data_root (str, optional): The config's ``data_root``.
        generator_cfg (dict, optional): Generation parameters.
        name (str): The dataset's name.
        version (int): Its generator's version.
        prepare (Callable): ``prepare(data_root, **generator_cfg)``, which
            generates or reuses the dataset and returns its folder.

    Returns:
        str: The dataset folder.
    """
    if generator_cfg is not None and not isinstance(generator_cfg, dict):
        raise TypeError(f'generator_cfg must be a dict or None, got '
                        f'{type(generator_cfg).__name__}')
    if data_root and generator_cfg is None and holds_dataset(data_root, name, version):
        return data_root
    return prepare(data_root, **(generator_cfg or {}))


def prepare_dataset(data_root: Optional[str], name: str, version: int, params: dict,
                    default_params: dict, generate: Callable[[str], dict]) -> str:
    """Generates a dataset into its folder once, or reuses it when present.

    Safe to call from several processes at once: one generates while the
    others wait on a lock beside the folder, then all return the same folder.

    Args:
        data_root (str, optional): The dataset's folder; None means its
            :func:`cache_folder`.
        name (str): The dataset's name, as its manifest states it.
        version (int): Its generator's version.
        params (dict): The checked generation parameters (``num_train`` and
            ``num_val`` among them).
        default_params (dict): The canonical default parameters (the cache
            folder of other parameters is named with their hash).
        generate (Callable): ``generate(out_dir)`` writes the dataset into a
            fresh folder and returns its manifest, which is written last.

    Returns:
        str: The absolute path of the finished dataset folder.

    Raises:
        FileExistsError: If ``root`` exists and holds anything other than
            this dataset generated with ``params`` (it is never overwritten).
    """
    from mmengine.logging import print_log
    root = (osp.abspath(osp.expanduser(data_root))
            if data_root else cache_folder(name, version, params, default_params))
    if holds_dataset(root, name, version, params):
        return root
    parent, base = osp.split(root)
    os.makedirs(parent, exist_ok=True)
    with file_lock(osp.join(parent, f'.{base}.lock')):
        if holds_dataset(root, name, version, params):  # finished while we waited
            return root
        if osp.exists(root) and (not osp.isdir(root) or os.listdir(root)):
            raise FileExistsError(
                f'data_root {root!r} exists but does not hold the {name} v{version} dataset '
                f'with parameters {params}; remove it or pass another data_root')
        print_log(
            f'Generating the {name} dataset ({params["num_train"]} train + '
            f'{params["num_val"]} val images) into {root}',
            logger='current')
        start = time.perf_counter()
        tmp_dir = make_temp_dir(root)
        try:
            # The manifest is written last: a folder with one is complete.
            write_manifest(tmp_dir, generate(tmp_dir))
            published = publish_dir(tmp_dir, root)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
    if not published and not holds_dataset(root, name, version, params):
        raise FileExistsError(f'another process wrote a different dataset to {root!r}')
    print_log(f'{name} ready in {time.perf_counter() - start:.1f} s: {root}', logger='current')
    return root
