"""Load a resolved model and its tokenizer the same way for every family, tiny presets included."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

from koraft.core.config import reject_unknown_keys
from koraft.core.errors import KoraftError, ParamError
from koraft.core.processes import engine, local_rank
from koraft.models.chat import end_of_turn
from koraft.models.presets import ResolvedModel

DTYPES = ("float32", "bfloat16", "float16")
MODEL_KEYS = {"train": "model", "distill": "distill.student"}  # the params section of the model a stage loads


def torch_dtype(name: str, key: str):
    import torch

    if name not in DTYPES:
        raise ParamError(key, f"must be one of {', '.join(DTYPES)}, got {name!r}")
    return getattr(torch, name)


@contextmanager
def readable(source: str | Path):
    """A model folder whose files cannot be read (permissions, a corrupt or truncated file after
    `dvc checkout`) is one line naming it, not a traceback from inside transformers or safetensors."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, SafetensorError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KoraftError(f"{source}: cannot be loaded ({type(exc).__name__}: {detail})") from None


def load_tokenizer(resolved: ResolvedModel):
    """The tokenizer with a pad token that is not the end of turn (else the target's last token is masked)."""
    from transformers import AutoTokenizer

    with readable(resolved.source):
        tokenizer = AutoTokenizer.from_pretrained(resolved.source, revision=resolved.revision,
                                                  trust_remote_code=resolved.trust_remote_code)
    family = resolved.family
    if family.pad_token:
        if tokenizer.convert_tokens_to_ids(family.pad_token) in (None, tokenizer.unk_token_id):
            raise KoraftError(f"{resolved.source}: family {family.name} pads with {family.pad_token}, "
                              f"which this tokenizer does not have")
        tokenizer.pad_token = family.pad_token
    stop = end_of_turn(tokenizer, family)
    if tokenizer.pad_token is None or tokenizer.pad_token in (stop, tokenizer.eos_token):
        raise KoraftError(f"{resolved.source}: pad token {tokenizer.pad_token!r} is missing or equals the end of "
                          f"turn; name a reserved token as the family's pad_token")
    return tokenizer


def linear_layer_names(resolved: ResolvedModel) -> set[str]:
    """Last name parts of the model's Linear layers, from its config alone (no weights loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(resolved.source, revision=resolved.revision,
                                        trust_remote_code=resolved.trust_remote_code)
    if resolved.image_text:
        config = config.get_text_config()
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=resolved.trust_remote_code)
    return {name.rsplit(".", 1)[-1] for name, module in skeleton.named_modules()
            if isinstance(module, torch.nn.Linear)}


def check_target_modules(target_modules: str | list[str], resolved: ResolvedModel, key: str = "train") -> None:
    if target_modules == "all-linear":
        return
    if isinstance(target_modules, str) or not isinstance(target_modules, list) or not target_modules:
        raise ParamError(f"{key}.lora.target_modules", f"must be all-linear or a list of module names, "
                                                      f"got {target_modules!r}")
    names = linear_layer_names(resolved)
    missing = [name for name in target_modules if name not in names]
    if missing:
        raise ParamError(f"{key}.lora.target_modules", f"{missing} name no layer of {resolved.source}; "
                                                      f"its linear layers are {', '.join(sorted(names))}")


def quantization_config(quantization: dict[str, Any], key: str = "train"):
    """NF4 4-bit with double quantization by default; keys mirror BitsAndBytesConfig."""
    import inspect

    from transformers import BitsAndBytesConfig

    allowed = set(inspect.signature(BitsAndBytesConfig.__init__).parameters) - {"self", "kwargs", "load_in_8bit"}
    reject_unknown_keys(quantization, allowed, f"{key}.quantization", "keys mirror BitsAndBytesConfig")
    settings = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                **quantization}
    settings["bnb_4bit_compute_dtype"] = torch_dtype(settings.get("bnb_4bit_compute_dtype", "bfloat16"),
                                                     f"{key}.quantization.bnb_4bit_compute_dtype")
    if "bnb_4bit_quant_storage" in settings:
        settings["bnb_4bit_quant_storage"] = torch_dtype(settings["bnb_4bit_quant_storage"],
                                                         f"{key}.quantization.bnb_4bit_quant_storage")
    try:
        return BitsAndBytesConfig(**settings)
    except (TypeError, ValueError) as exc:
        raise ParamError(f"{key}.quantization", str(exc).strip().splitlines()[0]) from None


def sharded_quantization(quantization: dict[str, Any], dtype: str, key: str) -> dict[str, Any]:
    """QLoRA under FSDP or DeepSpeed ZeRO-3, as bitsandbytes' FSDP-QLoRA recipe sets it: the engine
    shards only float tensors of one dtype, so the 4-bit weights are stored (bnb_4bit_quant_storage)
    and computed in the model's dtype. In one process or under DDP the uint8 storage stays."""
    if engine() not in ("fsdp", "deepspeed"):
        return quantization
    for name in ("bnb_4bit_quant_storage", "bnb_4bit_compute_dtype"):
        if quantization.get(name, dtype) != dtype:
            raise ParamError(f"{key}.quantization.{name}",
                             f"must equal the model dtype ({dtype}) under {engine()}, which shards the 4-bit "
                             f"weights only when they are stored and computed in it; got {quantization[name]!r}")
    return {**quantization, "bnb_4bit_quant_storage": dtype, "bnb_4bit_compute_dtype": dtype}


def attention_implementation(resolved: ResolvedModel, key: str = "model") -> str:
    """The attention kernel to load with: the param, or for `auto` the family's fastest exact one here.

    Gemma-2 soft-caps its attention logits: flash-attention 2 and flex attention do that in the kernel,
    sdpa cannot, so eager (which materializes every attention matrix) is only the fallback without a GPU.
    """
    import importlib.util

    import torch

    wanted, cuda = resolved.attn_implementation, torch.cuda.is_available()
    has_flash = cuda and importlib.util.find_spec("flash_attn") is not None
    if wanted == "auto":
        if not resolved.family.soft_caps_attention:
            return "sdpa"
        return "flash_attention_2" if has_flash else "flex_attention" if cuda else "eager"
    if wanted == "flash_attention_2" and not has_flash:
        raise ParamError(f"{key}.attn_implementation", "flash_attention_2 needs a CUDA GPU and the flash-attn "
                                                      "package (pip install flash-attn); use auto")
    return wanted


# An image-text checkpoint's language-model weights, under the names a text-only model gives them: the hub's
# original layout (language_model.model.*) and transformers 5's (model.language_model.*). The vision tower and
# projector match nothing and are not loaded.
LANGUAGE_MODEL_KEYS = {r"^language_model\.model\.": "model.", r"^model\.language_model\.": "model.",
                       r"^language_model\.lm_head\.": "lm_head."}


def language_model_only(resolved: ResolvedModel) -> dict[str, Any]:
    """from_pretrained arguments that load the text model alone of an image-text checkpoint (Gemma 3 4B and up):
    its text config, so AutoModelForCausalLM builds the text-only class, and its weights renamed to it.
    Training, merging and GGUF export then see an ordinary causal LM."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolved.source, revision=resolved.revision,
                                        trust_remote_code=resolved.trust_remote_code)
    return {"config": config.get_text_config(), "key_mapping": LANGUAGE_MODEL_KEYS}


def load_model(resolved: ResolvedModel, quantization: dict[str, Any] | None = None, dtype: str | None = None,
               key: str = "train"):
    """from_pretrained with the family's attention and the preset's dtype; 4-bit when `quantization` is given."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or resolved.dtype
    kwargs: dict[str, Any] = {
        "revision": resolved.revision,
        "trust_remote_code": resolved.trust_remote_code,
        "attn_implementation": attention_implementation(resolved, MODEL_KEYS.get(key, key)),
        "dtype": torch_dtype(dtype, "model.dtype"),
    }
    if resolved.image_text:
        kwargs.update(language_model_only(resolved))
    if quantization is not None:
        kwargs["quantization_config"] = quantization_config(sharded_quantization(quantization, dtype, key), key)
        if engine() == "ddp" and torch.cuda.is_available():
            kwargs["device_map"] = {"": local_rank()}  # each DDP process holds its own 4-bit copy on its own GPU
    with readable(resolved.source):
        return AutoModelForCausalLM.from_pretrained(resolved.source, **kwargs)
