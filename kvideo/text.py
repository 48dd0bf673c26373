"""Text conditioning: a T5-family encoder, the checkpoint's projection, and the null-embedding context."""
from __future__ import annotations

import contextlib
import json
import sys
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

import torch
from torch import nn

from kvideo.checkpoint import UnreadableCheckpointError, load_state_dict_strict
from kvideo.quantize import is_quantized, quantize_linears

MAX_TOKENS = 128
# Hugging Face model_type -> encoder class in transformers
T5_ENCODERS = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}
T5_CONFIGS = {"t5": "T5Config", "mt5": "MT5Config", "umt5": "UMT5Config"}
ENCODER_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class TextContext(NamedTuple):
    """What the UNet reads: context (b, n, d) and context_mask (b, n) bool (True = a real token)."""

    context: torch.Tensor
    mask: torch.Tensor

    def to(self, *args, **kwargs) -> "TextContext":
        """Move / cast the context (`.to(device, dtype)`); the mask only changes device."""
        context = self.context.to(*args, **kwargs)
        return TextContext(context, self.mask.to(context.device))


# -- context tensors -----------------------------------------------------------------------------
def trim_padding(context: torch.Tensor, mask: torch.Tensor) -> TextContext:
    """Zero the rows of padding tokens and cut the sequence to the longest prompt + 1 tokens."""
    mask = mask.bool()
    context = context.masked_fill(~mask[..., None], 0.0)  # (b, n, d), padding rows 0
    keep = int(mask.sum(dim=-1).max()) + 1
    return TextContext(context[:, :keep], mask[:, :keep])


def pad_context(context: torch.Tensor, mask: torch.Tensor, length: int) -> TextContext:
    """Extend (b, n, d) / (b, n) to `length` tokens with zero rows that the mask leaves out."""
    extra = length - context.shape[1]
    if extra < 0:
        raise ValueError(f"cannot pad a context of {context.shape[1]} tokens to {length}")
    if extra == 0:
        return TextContext(context, mask.bool())
    context = torch.cat([context, context.new_zeros(context.shape[0], extra, context.shape[2])], dim=1)
    return TextContext(context, torch.cat([mask.bool(), mask.new_zeros(mask.shape[0], extra, dtype=torch.bool)], dim=1))


def stack_contexts(contexts: Sequence[TextContext]) -> TextContext:
    """Concatenate contexts on the batch axis, padding each to the longest."""
    length = max(c.context.shape[1] for c in contexts)
    padded = [pad_context(c.context, c.mask, length) for c in contexts]
    return TextContext(torch.cat([p.context for p in padded]), torch.cat([p.mask for p in padded]))


def null_context(null_embedding: torch.Tensor, batch: int = 1, length: int = 1) -> TextContext:
    """The unconditional context: zeros with the learned null embedding at position 0, mask only there.

    The UNet's attention pooling averages over all `length` tokens, so the length matters: the
    release uses the conditional context's length for text guidance, and 2 for interpolation.
    """
    if null_embedding.dim() != 1:
        raise ValueError(f"null_embedding must be a (d,) vector; got shape {tuple(null_embedding.shape)}")
    if batch < 1 or length < 1:
        raise ValueError(f"null_context needs batch >= 1 and length >= 1; got batch={batch}, length={length}")
    context = null_embedding.new_zeros(batch, length, null_embedding.shape[0])
    context[:, 0] = null_embedding
    mask = torch.zeros(batch, length, dtype=torch.bool, device=null_embedding.device)
    mask[:, 0] = True
    return TextContext(context, mask)


# -- projection ----------------------------------------------------------------------------------
class TextProjection(nn.Module):
    """Linear(text_dim, context_dim, bias=False) -> LayerNorm; keys as the checkpoint's `projections`
    (t5.0.weight, t5.1.weight, t5.1.bias)."""

    def __init__(self, text_dim: int, context_dim: int) -> None:
        super().__init__()
        self.t5 = nn.Sequential(nn.Linear(text_dim, context_dim, bias=False), nn.LayerNorm(context_dim))

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], *,
                        dtype: torch.dtype = torch.float32) -> "TextProjection":
        """Build from the checkpoint's `projections` entries (sizes read from the weights), strictly."""
        if "t5.0.weight" not in state:
            raise ValueError(f"not a text projection state: expected 't5.0.weight', found {sorted(state)[:6]}")
        context_dim, text_dim = state["t5.0.weight"].shape
        projection = cls(text_dim, context_dim)
        load_state_dict_strict(projection, {k: v.to(dtype) for k, v in state.items()}, what="TextProjection")
        return projection.to(dtype).eval()

    @property
    def text_dim(self) -> int:
        return self.t5[0].in_features

    @property
    def context_dim(self) -> int:
        return self.t5[0].out_features

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> TextContext:
        """hidden (b, n, text_dim), mask (b, n) -> context (b, m, context_dim), mask (b, m) bool,
        m = longest prompt + 1; padding rows are zero."""
        context = self.t5(hidden.to(self.t5[0].weight.dtype))  # (b, n, context_dim)
        return trim_padding(context, mask)

    project_text = forward


# -- prompts -------------------------------------------------------------------------------------
def check_prompts(prompts: str | Sequence[str], what: str = "prompt") -> list[str]:
    """A list of non-empty prompt strings, or a ValueError naming the bad one."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Sequence) or not prompts:
        raise ValueError(f"{what} must be a non-empty string or a non-empty list of strings; got {prompts!r}")
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise ValueError(f"{what} must be a string; got {type(prompt).__name__} {prompt!r}")
        if not prompt.strip():
            raise ValueError(f"{what} {prompt!r} is empty; describe the video in words")
    return list(prompts)


# -- encoder -------------------------------------------------------------------------------------
def _transformers():
    try:
        import transformers
    except ImportError as error:  # pragma: no cover - a core dependency
        raise ImportError("the text encoder needs transformers: pip install 'transformers>=4.36'") from error
    return transformers


def _dtype_argument(transformers, dtype: torch.dtype) -> dict:
    """transformers >= 4.56 names the load dtype `dtype`; older versions `torch_dtype`."""
    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


@contextlib.contextmanager
def hf_progress_bars(enabled: bool):
    """Hugging Face's own progress bars (loading weights, writing shards) on or off within the block."""
    logging = _transformers().utils.logging
    before = logging.is_progress_bar_enabled()
    (logging.enable_progress_bar if enabled else logging.disable_progress_bar)()
    try:
        yield
    finally:
        (logging.enable_progress_bar if before else logging.disable_progress_bar)()


TOKENIZER_FILES = ("tokenizer.json", "spiece.model")  # a fast tokenizer, or T5's sentencepiece model
MIN_VOCAB_FRACTION = 0.9  # a tokenizer may cover less than the embedding table (T5: 32100 of 32128 rows), not much


def load_t5_encoder(directory: str | Path, dtype: torch.dtype = torch.float32, *, progress: bool = False,
                    expected_dim: int | None = None, int8: bool = False):
    """(encoder, tokenizer) from a local Hugging Face directory of a T5-family model (T5, mT5, UMT5).

    The folder must be complete: config, weights, and a tokenizer whose vocabulary fits the encoder's
    (else one line naming what is wrong; `expected_dim`: the d_model the projection takes). Code the
    folder asks for (`auto_map`) never runs: transformers' own classes load it, and a notice says so.
    transformers' loading bar stays off unless `progress`.

    `int8`: the weights are read in bfloat16, every linear weight is quantized to int8 (weight-only, a scale
    per output channel: kvideo.quantize), then the other tensors (embedding, norms, scales) are cast to
    `dtype`, the dtype it computes in. The bfloat16 model exists only while it loads.
    """
    encoder_class, config, tokenizer = _encoder_parts(directory, expected_dim)
    transformers = _transformers()
    load_dtype = torch.bfloat16 if int8 else dtype
    with hf_progress_bars(progress), hf_quiet():
        try:
            encoder = encoder_class.from_pretrained(directory, config=config,
                                                    **_dtype_argument(transformers, load_dtype))
        except (OSError, ValueError) as error:  # missing weights: transformers' message names the folder
            raise FileNotFoundError(f"{str(directory)!r}: {_first_line(error)}") from None
        except Exception as error:  # noqa: BLE001 (safetensors, pickle and size errors have their own types)
            raise UnreadableCheckpointError(f"{str(directory)!r}: the encoder weights cannot be loaded "
                                            f"({_weights_problem(error)})") from None
    if int8:
        quantize_linears(encoder)
        encoder.to(dtype)
    return encoder.eval().requires_grad_(False), tokenizer


def t5_encoder_shell(directory: str | Path, *, expected_dim: int | None = None):
    """(encoder, tokenizer) as `load_t5_encoder` gives them, but the encoder on the meta device: its config and
    structure without its weights (none are read), for a text encoder that loads them only when it encodes."""
    encoder_class, config, tokenizer = _encoder_parts(directory, expected_dim)
    with torch.device("meta"), hf_quiet():
        encoder = encoder_class(config)
    return encoder.eval().requires_grad_(False), tokenizer


def _encoder_parts(directory: str | Path, expected_dim: int | None):
    """(encoder class, config, tokenizer) of a T5-family folder, checked; no weights are read."""
    transformers = _transformers()
    directory = Path(directory)
    model_type, config = _read_encoder_config(directory)
    if expected_dim is not None and config.d_model != expected_dim:
        raise ValueError(f"{str(directory)!r} holds a {config.d_model}-d encoder but the projection takes "
                         f"{expected_dim}-d text features; use the encoder the checkpoint was trained with")
    tokenizer = _load_tokenizer(transformers, directory)
    _check_vocabulary(directory, tokenizer, config.vocab_size)
    return getattr(transformers, T5_ENCODERS[model_type]), config, tokenizer


def _weights_problem(error: BaseException) -> str:
    """Why transformers could not load a folder's weights, in a few words, with the way out."""
    text = str(error)
    if "Weights only load failed" in text:
        return ("a pickle that torch.load(weights_only=True) refuses: it holds Python objects, and loading them "
                "would run code; convert it to model.safetensors where it came from")
    if "ignore_mismatched_sizes" in text:
        return "the tensors' sizes do not match its config.json; use the config the weights were saved with"
    return f"{type(error).__name__}: {_first_line(error)}; copy the folder again"


def _read_encoder_config(directory: Path):
    """(model_type, config) of a T5-family folder, read without running any code it names."""
    transformers = _transformers()
    if not directory.is_dir():
        raise FileNotFoundError(f"text encoder directory {str(directory)!r} does not exist; "
                                "pass a local Hugging Face T5 folder (e.g. a download of google/flan-ul2)")
    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(directory)!r} has no config.json; it is not a Hugging Face model folder")
    try:
        values = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{str(path)!r} is not a JSON config ({error})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{str(path)!r} holds a {type(values).__name__}, not a model config")
    model_type = values.get("model_type")
    if model_type not in T5_ENCODERS:
        raise ValueError(f"{str(directory)!r} holds a {model_type!r} model; kvideo needs a T5-family encoder "
                         f"({', '.join(sorted(T5_ENCODERS))}), e.g. google/flan-ul2")
    if "auto_map" in values:
        _say(f"kvideo: {str(path)!r} asks for code of its own (auto_map); it is loaded with transformers' "
             f"{T5_ENCODERS[model_type]} instead, and none of the folder's code runs")
        values = {k: v for k, v in values.items() if k != "auto_map"}
    config_class = getattr(transformers, T5_CONFIGS[model_type])
    try:
        config = config_class.from_dict(values)
    except Exception as error:  # noqa: BLE001 (transformers validates fields with its own error types)
        raise ValueError(f"{str(path)!r} is not a {model_type} config: {' '.join(str(error).split())[:200]}") \
            from None
    for name in ("d_model", "vocab_size"):
        value = getattr(config, name, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{str(path)!r}: {name}={value!r} must be a whole number >= 1")
    return model_type, config


def _load_tokenizer(transformers, directory: Path):
    """The folder's own tokenizer (never a default one built from nothing), without remote code."""
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"{str(directory)!r} has no tokenizer ({' or '.join(TOKENIZER_FILES)}); without "
                                "it every word would read as <unk>: copy the encoder's tokenizer files into it")
    settings = directory / "tokenizer_config.json"
    if settings.is_file() and "auto_map" in settings.read_bytes().decode("utf-8", "replace"):
        _say(f"kvideo: {str(settings)!r} asks for code of its own (auto_map); the tokenizer is loaded with "
             "transformers' own classes instead, and none of the folder's code runs")
    try:
        with hf_quiet():
            return transformers.AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    except Exception as error:  # noqa: BLE001 (tokenizers raise many types for a damaged file)
        raise FileNotFoundError(f"{str(directory)!r} has no usable tokenizer ({' or '.join(TOKENIZER_FILES)}): "
                                f"{_first_line(error)}") from None


def _check_vocabulary(directory: Path, tokenizer, vocab_size: int) -> None:
    """The tokenizer's ids index the encoder's embedding table, and cover most of it."""
    size, largest = len(tokenizer), max(tokenizer.get_vocab().values(), default=-1)
    if largest >= vocab_size or size < MIN_VOCAB_FRACTION * vocab_size:
        raise ValueError(f"{str(directory)!r}: its tokenizer has {size} tokens (ids up to {largest}) but the encoder "
                         f"has a vocabulary of {vocab_size}; the tokenizer files belong to another model")


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:200]


def _say(message: str) -> None:
    print(message, file=sys.stderr)


@contextlib.contextmanager
def hf_quiet():
    """transformers' own log lines (load reports, warnings) off within the block; kvideo says what matters."""
    logging = _transformers().utils.logging
    before = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(before)


def default_encoder_dtype(device: str | torch.device) -> torch.dtype:
    """bfloat16 on a GPU (T5 overflows in float16 more easily), float32 elsewhere."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


class TextEncoder:
    """Prompts -> the keyframe UNet's text context: T5 encoder, projection, padding zeroed and cut.

    Prompts are tokenized to `max_length` tokens (padded, truncated with a warning). Contexts of
    prompts seen before come from an LRU cache of `cache_size` prompts. With `offload=True` the
    encoder waits on the CPU and visits `device` only while it encodes. With `reload` (a function
    of `int8` that loads the encoder's weights) the encoder is a weightless shell: each encoding of
    prompts not in the cache loads it, and its weights are freed as soon as it has encoded them
    (staged loading). The projection and null embedding come from the keyframe checkpoint
    (`projections`, `null_embedding`). `int8` says whether the encoder's linear weights are int8.
    """

    def __init__(self, encoder: nn.Module, tokenizer, projection: TextProjection, null_embedding: torch.Tensor, *,
                 device: str | torch.device = "cpu", max_length: int = MAX_TOKENS, offload: bool = False,
                 cache_size: int = 64, reload: Callable[[bool], nn.Module] | None = None) -> None:
        if projection.text_dim != encoder.config.d_model:
            raise ValueError(f"the projection takes {projection.text_dim}-d text features but the encoder gives "
                             f"{encoder.config.d_model}-d ones; use the encoder the checkpoint was trained with")
        if tuple(null_embedding.shape) != (projection.context_dim,):
            raise ValueError(
                f"null_embedding has shape {tuple(null_embedding.shape)}; expected ({projection.context_dim},)")
        self.device = torch.device(device)
        self.encoder, self.tokenizer, self.max_length = encoder, tokenizer, max_length
        self.projection = projection.to(self.device)
        self.null_embedding = null_embedding.to(self.device, self.projection.t5[0].weight.dtype)
        self.offload_encoder, self.cache_size = offload, cache_size
        self._cache: OrderedDict[str, TextContext] = OrderedDict()
        self._reload, self.int8 = reload, is_quantized(encoder)
        if reload is None:
            self.encoder.to("cpu" if offload else self.device)

    @classmethod
    def from_pretrained(cls, directory: str | Path, projection: TextProjection, null_embedding: torch.Tensor, *,
                        device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                        max_length: int = MAX_TOKENS, offload: bool = False, cache_size: int = 64,
                        progress: bool = True, int8: bool = False, staged: bool = False) -> "TextEncoder":
        """Load a T5-family encoder + tokenizer from a local folder; `dtype` (the dtype it computes in) defaults to
        bf16 on GPU, fp32 on CPU. `int8`: linear weights in int8 (`load_t5_encoder`). `staged`: no weights are
        read now; each encoding loads them and frees them after (see the class). transformers' own loading bar
        is always off (it printed on every generate); `progress` is kept for callers."""
        dtype = dtype or default_encoder_dtype(device)
        if dtype not in ENCODER_DTYPES:
            raise ValueError(f"text encoder dtype {dtype} is not supported; choose one of {ENCODER_DTYPES}")
        if not staged:
            encoder, tokenizer = load_t5_encoder(directory, dtype, expected_dim=projection.text_dim, int8=int8)
            return cls(encoder, tokenizer, projection, null_embedding, device=device, max_length=max_length,
                       offload=offload, cache_size=cache_size)
        encoder, tokenizer = t5_encoder_shell(directory, expected_dim=projection.text_dim)

        def reload(quantized: bool) -> nn.Module:
            return load_t5_encoder(directory, dtype, int8=quantized)[0]

        text = cls(encoder, tokenizer, projection, null_embedding, device=device, max_length=max_length,
                   offload=offload, cache_size=cache_size, reload=reload)
        text.int8 = int8
        return text

    # -- public API --------------------------------------------------------------------------
    def encode(self, prompts: str | Sequence[str]) -> TextContext:
        """context (b, n, d) float32 and mask (b, n) bool on `device`; n = longest prompt + 1 tokens."""
        prompts = check_prompts(prompts)
        found = {p: self._cache[p] for p in dict.fromkeys(prompts) if p in self._cache}
        for prompt in found:  # most recently used first, so that the new entries evict older prompts
            self._cache.move_to_end(prompt)
        missing = [p for p in dict.fromkeys(prompts) if p not in found]
        if missing:
            for prompt, context in zip(missing, self._encode_uncached(missing)):
                found[prompt] = context
                self._remember(prompt, context)
        return stack_contexts([found[p] for p in prompts])

    def unconditional(self, batch: int = 1, length: int = 1) -> TextContext:
        """Zeros with the null embedding at position 0 and the mask only there: (batch, length, d)."""
        return null_context(self.null_embedding, batch, length)

    def encode_pair(self, prompts: str | Sequence[str], negative: str | Sequence[str] | None = None
                    ) -> tuple[TextContext, TextContext]:
        """(conditional, unconditional) contexts of equal length for classifier-free guidance.

        Without a negative prompt the unconditional context is the null context at the conditional
        length (as the release). A negative prompt is encoded on its own (one for all prompts, or one
        each) and both are padded to the longer of the two.
        """
        cond = self.encode(prompts)
        if negative is None:
            return cond, self.unconditional(cond.context.shape[0], cond.context.shape[1])
        negatives = check_prompts(negative, "negative prompt")
        if len(negatives) not in (1, cond.context.shape[0]):
            raise ValueError(
                f"got {len(negatives)} negative prompts for {cond.context.shape[0]} prompts; give 1 or one each")
        uncond = self.encode(negatives * (cond.context.shape[0] // len(negatives)))
        length = max(cond.context.shape[1], uncond.context.shape[1])
        return pad_context(*cond, length), pad_context(*uncond, length)

    def offload(self) -> None:
        """Move the encoder to the CPU (cached contexts stay where they are); a staged encoder holds no weights."""
        if self._reload is None:
            self.encoder.to("cpu")

    def quantize_int8(self) -> None:
        """Hold the encoder's linear weights in int8 from now on (weight-only, a scale per output channel:
        kvideo.quantize); a staged encoder loads them so. Once: an int8 encoder stays as it is. The contexts cached
        so far (the float encoder's) are dropped."""
        if self.int8:
            return
        if self._reload is None and quantize_linears(self.encoder) == 0:
            raise ValueError(f"text_encoder_int8: the text encoder ({type(self.encoder).__name__}) has no float "
                             "nn.Linear layers to hold in int8; run without --text-encoder-int8")
        self.int8 = True
        self.clear_cache()  # the float encoder's contexts

    def clear_cache(self) -> None:
        self._cache.clear()

    # -- internals ---------------------------------------------------------------------------
    def _remember(self, prompt: str, context: TextContext) -> None:
        self._cache[prompt] = context
        while len(self._cache) > max(self.cache_size, 0):
            self._cache.popitem(last=False)

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> list[TextContext]:
        tokens = self._tokenize(prompts)
        encoder = self.encoder if self._reload is None else self._reload(self.int8)  # staged: loaded for this call
        encoder.to(self.device)
        try:
            hidden = encoder(**tokens).last_hidden_state  # (b, max_length, text_dim)
        finally:
            if self.offload_encoder:
                self.offload()
            del encoder  # a staged encoder's weights go with it
        projected = self.projection(hidden, tokens["attention_mask"])
        return [trim_padding(projected.context[i : i + 1], projected.mask[i : i + 1]) for i in range(len(prompts))]

    def _tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        for prompt in prompts:
            if len(self.tokenizer(prompt)["input_ids"]) > self.max_length:
                warnings.warn(f"prompt {prompt[:40]!r}... is longer than {self.max_length} tokens and is truncated")
        tokens = self.tokenizer(prompts, max_length=self.max_length, padding="max_length", truncation=True,
                                return_tensors="pt")
        return {name: tokens[name].to(self.device) for name in ("input_ids", "attention_mask")}


def write_tiny_t5(directory: str | Path, *, d_model: int = 32, seed: int = 0) -> Path:
    """Write a tiny random T5 encoder and a byte-level tokenizer to `directory` (offline; for tests and
    the tiny preset). Any text tokenizes: one token per UTF-8 byte, then </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = _vocabulary(sorted(pre_tokenizers.ByteLevel.alphabet()))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return _write_t5(directory, backend, len(vocab), d_model=d_model, num_layers=1, seed=seed)


def write_word_t5(directory: str | Path, words: Sequence[str], *, d_model: int = 64, num_layers: int = 2,
                  seed: int = 0, t5: Mapping | None = None) -> Path:
    """Write a random T5 encoder with a word-level tokenizer over `words` (lower-cased, split on spaces and
    punctuation; other words become <unk>) to `directory`, in Hugging Face format. For small closed
    vocabularies such as the shapes grammar: every word is one token with an embedding of its own.
    `t5` overrides T5Config fields (e.g. flan-ul2's d_kv, d_ff, heads and gated-silu, for benchmarks)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = _vocabulary(sorted({w.lower() for w in words}))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return _write_t5(directory, backend, len(vocab), d_model=d_model, num_layers=num_layers, seed=seed, t5=t5)


def _vocabulary(tokens: Sequence[str]) -> dict[str, int]:
    """T5's special tokens first (<pad> 0, </s> 1, <unk> 2), then `tokens`."""
    specials = ["<pad>", "</s>", "<unk>"]
    return {token: i for i, token in enumerate(specials + [t for t in tokens if t not in specials])}


def _write_t5(directory: str | Path, backend, vocab_size: int, *, d_model: int, num_layers: int, seed: int,
              t5: Mapping | None = None) -> Path:
    """Save `backend` (a tokenizers.Tokenizer; </s> appended to every text) and a random T5 encoder."""
    from tokenizers import processors

    transformers = _transformers()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=MAX_TOKENS
    )
    fields = dict(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=num_layers,
                  num_heads=max(1, d_model // 8), pad_token_id=0, eos_token_id=1)
    config = transformers.T5Config(**{**fields, **(t5 or {})})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = transformers.T5EncoderModel(config)
    with hf_progress_bars(False):  # a few small files
        encoder.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
